"""Memory: peak RSS of a fresh process handling the largest batch Lambda can deliver.

A Lambda event from DynamoDB Streams is at most 6 MB. The event here is just under
6,000,000 bytes of compact JSON: about 4,600 records (NEW_IMAGE view) of ~0.85 KB realistic
images (bench/common.py, padded), ~1.3 KB per record. A fresh process imports the handler, parses the event from JSON
(as the Lambda runtime does before calling the handler) and handles it against the local
Elasticsearch, into a fresh alias. It reports, from ``resource.getrusage(RUSAGE_SELF)``, the
peak resident set size after the imports (the baseline), after parsing the event, and after
the batch. The Lambda runtime's own process adds a few MB that are not counted here.

For context, the same is measured for a hand-written handler on the same event: boto3's
``TypeDeserializer``, ``json.dumps`` and ``elasticsearch.helpers.bulk``. Usage:
``python bench/memory_bench.py --runs 3 --json memory.json``.
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

ALIAS = "bench-memory"
FLOOR_INDEX = "bench-memory-floor"
EVENT_BYTES = 6_000_000
PADDING = 130  # description characters: images of ~0.85 KB, records of ~1.3 KB (compact JSON)
GOAL_MB = 128.0

MEASURE = """
import json, resource, sys, time
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
def hwm_mb():  # the kernel's high-water mark of this process image, a cross-check
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

OURS = MEASURE + """
import indexer.handler
import elasticsearch  # imported by the first invocation anyway; counted in the baseline
baseline = peak_mb()
event = json.loads(open(sys.argv[1], "rb").read())
parsed = peak_mb()
started = time.perf_counter()
response = indexer.handler.handler(event, None)
seconds = time.perf_counter() - started
assert response == {"batchItemFailures": []}, str(response)[:500]
print(json.dumps({"baseline": baseline, "event": parsed, "peak": peak_mb(), "hwm": hwm_mb(), "seconds": seconds}))
"""

FLOOR = MEASURE + """
import base64, os
from decimal import Decimal
import boto3, elasticsearch
from boto3.dynamodb.types import Binary, TypeDeserializer
from elasticsearch import helpers
sys.path.insert(0, "bench")  # run from the repository root
from common import to_boto3_shape  # binary values as bytes, as TypeDeserializer expects (stdlib only)
baseline = peak_mb()
event = json.loads(open(sys.argv[1], "rb").read())
parsed = peak_mb()

def default(value):
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, set):
        return sorted(value, key=lambda member: member.value if isinstance(member, Binary) else member)
    if isinstance(value, Binary):
        return base64.b64encode(value.value).decode()
    raise TypeError(type(value).__name__)

started = time.perf_counter()
deserializer = TypeDeserializer()
client = elasticsearch.Elasticsearch(os.environ["ELASTICSEARCH_URL"], request_timeout=120)
actions = ({"_index": os.environ["FLOOR_INDEX"], "_id": record["dynamodb"]["Keys"]["pk"]["S"],
            "_source": json.dumps({name: deserializer.deserialize(value)
                                   for name, value in to_boto3_shape(record["dynamodb"]["NewImage"]).items()}, default=default)}
           for record in event["Records"])
ok, errors = helpers.bulk(client, actions)
seconds = time.perf_counter() - started
assert ok == len(event["Records"]) and not errors
print(json.dumps({"baseline": baseline, "event": parsed, "peak": peak_mb(), "hwm": hwm_mb(), "seconds": seconds}))
"""


def compact(value: Any) -> str:
    """JSON as Lambda sends it: no spaces."""
    return json.dumps(value, separators=(",", ":"))


def largest_event() -> dict[str, Any]:
    """As many ~1 KB-image records as fit in EVENT_BYTES of JSON."""
    records: list[dict[str, Any]] = []
    size = len('{"Records":[]}')
    n = 0
    while True:
        record = common.record(n, "INSERT" if n % 2 else "MODIFY", sequence=n, padding=PADDING)
        record["dynamodb"].pop("OldImage", None)  # NEW_IMAGE view: the most records per event
        record["dynamodb"]["StreamViewType"] = "NEW_IMAGE"
        cost = len(compact(record)) + 1
        if size + cost > EVENT_BYTES:
            return {"Records": records}
        records.append(record)
        size += cost
        n += 1


def launched(code: str, event_path: str) -> list[str]:
    """The command that runs ``code`` in a fresh Python forked from a small shell.

    Linux carries a process's peak RSS across ``exec`` (``ru_maxrss`` starts at the peak of
    the image it replaces), and this benchmark holds the whole event in memory: a child
    started straight from it would report this process's peak as its own baseline."""
    return ["/bin/sh", "-c", '"$0" -c "$1" "$2"; exit $?', sys.executable, code, event_path]


def main() -> int:
    parser = common.parser(__doc__)
    common.add_es_flag(parser)
    parser.add_argument("--runs", type=common.positive, default=3, help="fresh processes per side (default: 3)")
    args = parser.parse_args()

    from elasticsearch import Elasticsearch

    from indexer.layout import index_body

    event = largest_event()
    count = len(event["Records"])
    image_bytes = sum(len(compact(r["dynamodb"]["NewImage"])) for r in event["Records"]) / count
    with common.elasticsearch(args.es_url) as es_url, tempfile.TemporaryDirectory() as scratch:
        es = Elasticsearch(es_url, request_timeout=60)
        path = Path(scratch) / "event.json"
        path.write_text(compact(event))
        event_bytes = path.stat().st_size
        del event
        env = common.child_environment(es_url)
        env.update(INDEX_NAME=ALIAS, FLOOR_INDEX=FLOOR_INDEX)
        samples: dict[str, list[dict[str, float]]] = {"ours": [], "floor": []}
        for run in range(args.runs):
            for name, code in (("ours", OURS), ("floor", FLOOR)):
                es.indices.delete(index=f"{ALIAS}-*,{FLOOR_INDEX}", ignore_unavailable=True, allow_no_indices=True)
                es.indices.create(index=FLOOR_INDEX, **index_body())
                done = subprocess.run(launched(code, str(path)), env=env, capture_output=True,
                                      text=True, timeout=600, cwd=str(common.ROOT))
                if done.returncode != 0:
                    raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
                samples[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
                s = samples[name][-1]
                print(f"run {run + 1} {name:>5}: baseline {s['baseline']:6.1f} MB, event parsed {s['event']:6.1f} MB, "
                      f"peak {s['peak']:6.1f} MB (VmHWM {s['hwm']:6.1f} MB), {s['seconds']:.1f} s", flush=True)
        es.indices.delete(index=f"{ALIAS}-*,{FLOOR_INDEX}", ignore_unavailable=True, allow_no_indices=True)

    def mb(name: str, part: str) -> float:
        return round(common.median([sample[part] for sample in samples[name]]), 1)

    peak = max(sample["peak"] for sample in samples["ours"])
    figures = {
        "benchmark": "memory", "runs": args.runs, "records": count,
        "event_bytes": event_bytes, "average_image_bytes": round(image_bytes),
        "ours_baseline_mb": mb("ours", "baseline"), "ours_event_mb": mb("ours", "event"),
        "ours_peak_mb": round(peak, 1), "ours_seconds": round(common.median([s["seconds"] for s in samples["ours"]]), 2),
        "floor_baseline_mb": mb("floor", "baseline"), "floor_event_mb": mb("floor", "event"),
        "floor_peak_mb": round(max(sample["peak"] for sample in samples["floor"]), 1),
        "floor_seconds": round(common.median([s["seconds"] for s in samples["floor"]]), 2),
        "goal": f"<= {GOAL_MB:.0f} MB peak", "goal_mb": GOAL_MB, "met": peak <= GOAL_MB,
    }
    return report(figures, args.json)


def report(figures: dict[str, Any], path: str | None) -> int:
    print(f"\n{figures['event_bytes']:,}-byte event, {figures['records']} records, images of "
          f"~{figures['average_image_bytes']} bytes; highest of {figures['runs']} fresh processes:")
    print(f"  ours:  baseline {figures['ours_baseline_mb']} MB, with the event {figures['ours_event_mb']} MB, "
          f"peak {figures['ours_peak_mb']} MB (goal <= {figures['goal_mb']:.0f} MB: "
          f"{'met' if figures['met'] else 'MISSED'}), {figures['ours_seconds']} s")
    print(f"  hand-written (TypeDeserializer + helpers.bulk): baseline {figures['floor_baseline_mb']} MB, "
          f"peak {figures['floor_peak_mb']} MB, {figures['floor_seconds']} s")
    common.write_json(path, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
