"""Cold start: fresh-process import time of ``indexer.handler`` beside ``import boto3, elasticsearch``.

The floor is what any hand-written Lambda on this stack imports before its first line runs.
Each measurement is a new Python process (interleaved: ours, floor, floor, ours, ...) that
times its own import with ``time.perf_counter``; interpreter start-up is the same for both
and is left out. Bytecode caches are warm (one unmeasured round first), as in a deployment
package that ships ``.pyc`` files.

The handler imports neither boto3 (only the dead-letter path needs it) nor elasticsearch
(imported when the first invocation builds its client), so the same processes also time the
first invocation, a one-record batch against the local Elasticsearch, beside the floor's
first invocation: building an Elasticsearch client and ``helpers.bulk`` of the record's
image converted with boto3's ``TypeDeserializer``. Import plus first invocation is what a
cold Lambda adds to its first batch. Usage: ``python bench/coldstart_bench.py --runs 15``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

ALIAS = "bench-coldstart"
FLOOR_INDEX = "bench-coldstart-floor"
GOAL_MS = 30.0

OURS = """
import json, sys, time
event = json.load(open(sys.argv[1]))
t0 = time.perf_counter()
import indexer.handler
t1 = time.perf_counter()
first = indexer.handler.handler(event, None)
t2 = time.perf_counter()
second = indexer.handler.handler(event, None)
t3 = time.perf_counter()
assert first == second == {"batchItemFailures": []}, (first, second)
print(json.dumps({"import": t1 - t0, "first": t2 - t1, "second": t3 - t2, "modules": sorted(sys.modules)}))
"""

#: Ours, then what Powertools' Metrics would add (issue 15 chose our own EMF code by this):
#: its import, and its first use to emit the handler's metrics for one batch.
POWERTOOLS = """
import io, json, sys, time, contextlib
t0 = time.perf_counter()
import indexer.handler
t1 = time.perf_counter()
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
t2 = time.perf_counter()
metrics = Metrics(namespace="DynamoDBIndexer")
metrics.add_dimension(name="Alias", value="bench-coldstart")
for name in ("RecordsReceived", "RecordsIndexed", "RecordsDeleted", "RecordsStale", "RecordsDeadLettered",
             "RecordsFailed", "VersionConflicts", "BulkRequests"):
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
metrics.add_metric(name="BulkLatency", unit=MetricUnit.Milliseconds, value=12.5)
metrics.add_metric(name="BulkBytes", unit=MetricUnit.Bytes, value=1000)
metrics.add_metric(name="ReplicationLag", unit=MetricUnit.Milliseconds, value=850.0)
with contextlib.redirect_stdout(io.StringIO()):
    metrics.flush_metrics()
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "powertools_import": t2 - t1, "powertools_first_emit": t3 - t2,
                  "modules": sorted(sys.modules)}))
"""

FLOOR = """
import json, os, sys, time
event = json.load(open(sys.argv[1]))
t0 = time.perf_counter()
import boto3, elasticsearch
t1 = time.perf_counter()

def invoke(client):
    import base64
    from decimal import Decimal
    from boto3.dynamodb.types import Binary, TypeDeserializer
    from elasticsearch import helpers

    def default(value):
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        if isinstance(value, set):
            return sorted(value)
        if isinstance(value, Binary):
            return base64.b64encode(value.value).decode()
        raise TypeError(type(value).__name__)

    deserializer = TypeDeserializer()
    actions = []
    for record in event["Records"]:
        image = {k: {"B": base64.b64decode(v["B"])} if "B" in v else v for k, v in record["dynamodb"]["NewImage"].items()}
        document = {k: deserializer.deserialize(v) for k, v in image.items()}
        actions.append({"_index": os.environ["FLOOR_INDEX"], "_id": record["dynamodb"]["Keys"]["pk"]["S"],
                        "_source": json.dumps(document, default=default)})
    return helpers.bulk(client, actions)

client = elasticsearch.Elasticsearch(os.environ["ELASTICSEARCH_URL"])
invoke(client)
t2 = time.perf_counter()
invoke(client)
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first": t2 - t1, "second": t3 - t2, "modules": sorted(sys.modules)}))
"""


def flat_image_record() -> dict[str, Any]:
    """A realistic record without a binary set (the floor's reshaping handles top-level B only)."""
    record = common.record(1, "INSERT", sequence=1)
    image = record["dynamodb"]["NewImage"]
    del image["thumbnails"]
    return record


def run_child(code: str, event_path: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", code, event_path], env=env, capture_output=True, text=True,
                          timeout=120, cwd=str(common.ROOT))
    if done.returncode != 0:
        raise SystemExit(f"child process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = common.parser(__doc__)
    common.add_es_flag(parser)
    parser.add_argument("--runs", type=common.positive, default=15,
                        help="fresh processes per side (default: 15; the issue asks for at least 11)")
    args = parser.parse_args()

    from elasticsearch import Elasticsearch

    from indexer.layout import ALIAS_FILTER, index_body, initial_index

    with common.elasticsearch(args.es_url) as es_url, tempfile.TemporaryDirectory() as scratch:
        es = Elasticsearch(es_url, request_timeout=60)
        es.indices.delete(index=[initial_index(ALIAS), FLOOR_INDEX], ignore_unavailable=True)
        es.indices.create(index=FLOOR_INDEX, **index_body())
        es.indices.create(index=initial_index(ALIAS), **index_body(),
                          aliases={ALIAS: {"filter": ALIAS_FILTER, "is_write_index": True}})
        event_path = str(Path(scratch) / "event.json")
        Path(event_path).write_text(json.dumps({"Records": [flat_image_record()]}))
        env = common.child_environment(es_url)
        env.update(INDEX_NAME=ALIAS, FLOOR_INDEX=FLOOR_INDEX)
        codes = {"ours": OURS, "floor": FLOOR}
        if common.importable("aws_lambda_powertools"):
            codes["powertools"] = POWERTOOLS
        samples: dict[str, list[dict[str, Any]]] = {name: [] for name in codes}
        for name in codes:  # warm the bytecode caches
            run_child(codes[name], event_path, env)
        for run in range(args.runs):
            for name in (list(codes) if run % 2 == 0 else list(codes)[::-1]):
                samples[name].append(run_child(codes[name], event_path, env))
            print(f"run {run + 1:>2}: import ours {samples['ours'][-1]['import'] * 1000:6.1f} ms, "
                  f"floor {samples['floor'][-1]['import'] * 1000:6.1f} ms", flush=True)
        es.indices.delete(index=[initial_index(ALIAS), FLOOR_INDEX], ignore_unavailable=True)

    def ms(name: str, part: str) -> float:
        return round(common.median([sample[part] for sample in samples[name]]) * 1000, 1)

    def noise(name: str, part: str) -> str:
        return common.spread([sample[part] for sample in samples[name]])

    ours_modules = set(samples["ours"][0]["modules"])
    difference = ms("ours", "import") - ms("floor", "import")
    total = {name: round(common.median([s["import"] + s["first"] for s in samples[name]]) * 1000, 1)
             for name in ("ours", "floor")}
    figures = {
        "benchmark": "coldstart", "runs": args.runs,
        "ours_import_ms": ms("ours", "import"), "floor_import_ms": ms("floor", "import"),
        "difference_ms": round(difference, 1),
        "ours_first_invocation_ms": ms("ours", "first"), "floor_first_invocation_ms": ms("floor", "first"),
        "ours_second_invocation_ms": ms("ours", "second"), "floor_second_invocation_ms": ms("floor", "second"),
        "ours_import_plus_first_ms": total["ours"], "floor_import_plus_first_ms": total["floor"],
        "goal": f"<= +{GOAL_MS:.0f} ms over the floor", "goal_ms": GOAL_MS, "met": difference <= GOAL_MS,
        "stretch_met": difference < 0,
        "ours_imports_boto3": "boto3" in ours_modules,
        "noise": {"ours": noise("ours", "import"), "floor": noise("floor", "import")},
    }
    if samples.get("powertools"):
        figures["powertools_metrics_import_ms"] = ms("powertools", "powertools_import")
        figures["powertools_metrics_first_emit_ms"] = ms("powertools", "powertools_first_emit")
    print(f"\nmedians of {args.runs} fresh processes per side:")
    print(f"  floor: import boto3, elasticsearch   {figures['floor_import_ms']:7.1f} ms  {figures['noise']['floor']}")
    print(f"  ours:  import indexer.handler        {figures['ours_import_ms']:7.1f} ms  {figures['noise']['ours']}"
          f"  = {difference:+.1f} ms (goal <= +{GOAL_MS:.0f} ms: {'met' if figures['met'] else 'MISSED'}; "
          f"stretch, below the floor: {'met' if figures['stretch_met'] else 'missed'})")
    print(f"  first invocation (1 record):  ours {figures['ours_first_invocation_ms']} ms, "
          f"floor {figures['floor_first_invocation_ms']} ms; warm: ours {figures['ours_second_invocation_ms']} ms, "
          f"floor {figures['floor_second_invocation_ms']} ms")
    print(f"  import + first invocation:    ours {total['ours']} ms, floor {total['floor']} ms")
    print(f"  boto3 imported by the handler's cold path: {'yes' if figures['ours_imports_boto3'] else 'no'}")
    if "powertools_metrics_import_ms" in figures:
        print(f"  Powertools Metrics instead of our EMF code would add: import "
              f"{figures['powertools_metrics_import_ms']} ms, first emit {figures['powertools_metrics_first_emit_ms']} ms "
              f"({common.spread([s['powertools_import'] for s in samples['powertools']])})")
    common.write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
