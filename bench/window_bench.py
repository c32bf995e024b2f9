"""What the snapshot rule's uncertain window costs the handler: the cold batch with a share of its
records made within 60 s of a rebuild's scan start, beside the same batch with none.

The cold batch of bench/handler_bench.py (1,000 records of the 12-attribute shape: 600 INSERTs,
300 MODIFYs, 100 REMOVEs), delivered to an index a rebuild made: its ``_meta`` records when the
scan started, and the 400 items the MODIFYs and REMOVEs touch are in it as snapshots (sequence
0). Side ``none``: every record made an hour after the scan started (judged by time, no table
read: the handler's ordinary path). Side ``window``: the same records, ``--percent`` of them
(default 10) made 5 s before the scan started, so the handler reads those items from the table
(one consistent ``BatchGetItem`` per 100 keys) and writes the table's state. The table is moto,
in process, holding the items' present state: its latency is not DynamoDB's (single-digit ms
per request in region), so the figure is the handler's own work plus moto's.

Each run recreates the index with the same body and seed. Runs alternate which side goes first
(ABBA). Usage: ``python bench/window_bench.py --runs 9 --percent 10 --json window.json``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import handler_bench  # noqa: E402

ALIAS = "bench-window"
INDEX = f"{ALIAS}-r1"
TABLE = "Images"  # the table common.STREAM_ARN names


def main() -> int:
    parser = common.parser(__doc__)
    common.add_es_flag(parser)
    parser.add_argument("--runs", type=common.positive, default=9, help="measured runs per side (default: 9)")
    parser.add_argument("--percent", type=int, default=10, choices=range(1, 101), metavar="1..100",
                        help="share of the records made within the window (default: 10)")
    args = parser.parse_args()

    from elasticsearch import Elasticsearch
    from moto import mock_aws

    from indexer import handler as lambda_handler
    from indexer.layout import ALIAS_FILTER, META_KEY, index_body
    from indexer.records import SNAPSHOT_SEQUENCE, upsert

    seed_records, records = handler_bench.batch()
    started = time.time()
    outside = copy.deepcopy(records)
    for record in outside:
        record["dynamodb"]["ApproximateCreationDateTime"] = started + 3600
    inside = copy.deepcopy(outside)
    chosen = random.Random(11).sample(range(len(inside)), k=len(inside) * args.percent // 100)
    for position in chosen:
        inside[position]["dynamodb"]["ApproximateCreationDateTime"] = started - 5
    snapshots = [upsert(ALIAS, r["dynamodb"]["Keys"]["pk"]["S"], r["dynamodb"]["NewImage"], SNAPSHOT_SEQUENCE)
                 for r in seed_records]
    present = [common.to_boto3_shape(r["dynamodb"]["NewImage"]) for r in records if r["eventName"] != "REMOVE"]

    with common.elasticsearch(args.es_url) as es_url, mock_aws():
        import boto3

        os.environ.update(common.quiet_environment(es_url))
        os.environ.update(INDEX_NAME=ALIAS, AWS_ACCOUNT_ID_ENDPOINT_MODE="disabled")
        os.environ.pop("AWS_ENDPOINT_URL", None)  # moto intercepts in process
        os.environ["DLQ_URL"] = boto3.client("sqs").create_queue(QueueName="bench-dlq")["QueueUrl"]
        dynamodb = boto3.client("dynamodb")
        dynamodb.create_table(TableName=TABLE, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                              AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                              BillingMode="PAY_PER_REQUEST")
        for start in range(0, len(present), 25):
            dynamodb.batch_write_item(RequestItems={TABLE: [{"PutRequest": {"Item": item}}
                                                            for item in present[start:start + 25]]})
        es = Elasticsearch(es_url, request_timeout=120)

        def fresh_index() -> None:
            """The rebuilt index: scan start in ``_meta``, the 400 earlier items as snapshots."""
            es.indices.delete(index=INDEX, ignore_unavailable=True)
            body = index_body()
            body["mappings"]["_meta"] = {META_KEY: {"state": "complete", "snapshot_started": started}}
            es.indices.create(index=INDEX, **body, aliases={ALIAS: {"filter": ALIAS_FILTER, "is_write_index": True}})
            lines = []
            for change in snapshots:
                lines += [json.dumps({"create": {"_index": INDEX, "_id": change.doc_id}}).encode(), change.source]
            if es.bulk(operations=b"\n".join(lines) + b"\n", refresh=True)["errors"]:
                raise SystemExit("seeding the snapshots failed")

        lambda_handler.reset()
        pipeline = lambda_handler.pipeline()
        reads: dict[str, list[int]] = {"none": [], "window": []}
        read_seconds: dict[str, list[float]] = {"none": [], "window": []}
        reader = pipeline.table_reader
        timer = {"seconds": 0.0}
        items_of = reader.items

        def timed_items(*args: Any, **kwargs: Any) -> Any:
            clock = time.perf_counter()
            try:
                return items_of(*args, **kwargs)
            finally:
                timer["seconds"] += time.perf_counter() - clock

        reader.items = timed_items  # the table's share: moto's, not DynamoDB's

        def side(name: str, batch: list[dict[str, Any]]) -> Any:
            def run() -> float:
                fresh_index()
                pipeline.written.forget_index()
                before = reader.requests
                timer["seconds"] = 0.0
                clock = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):  # its EMF line
                    response = lambda_handler.handler({"Records": batch}, common.LambdaContext(600))
                seconds = time.perf_counter() - clock
                if response != {"batchItemFailures": []}:
                    raise SystemExit(f"the handler failed records: {response}")
                reads[name].append(reader.requests - before)
                read_seconds[name].append(timer["seconds"])
                return seconds
            return run

        results = common.interleaved({"none": side("none", outside), "window": side("window", inside)}, args.runs,
                                     on_run=lambda run, f: print(f"run {run + 1:>2}: " + "   ".join(
                                         f"{name} {f[name] * 1000:7.1f} ms" for name in f), flush=True))
        lambda_handler.reset()
        es.indices.delete(index=INDEX, ignore_unavailable=True)

    medians = {name: round(common.median(values) * 1000, 1) for name, values in results.items()}
    # Without the table's calls (warm-up round excluded): what the handler itself adds.
    own = {name: round(common.median([t - r for t, r in zip(results[name], read_seconds[name][1:])]) * 1000, 1)
           for name in results}
    reading = round(common.median(read_seconds["window"][1:]) * 1000, 1)
    figures = {
        "benchmark": "window", "runs": args.runs, "records": len(records), "percent_in_window": args.percent,
        "records_in_window": len(chosen), "median_ms": medians,
        "noise": {name: common.spread(values) for name, values in results.items()},
        "table_requests_per_batch": {name: max(values) for name, values in reads.items()},
        "extra_ms": round(medians["window"] - medians["none"], 1),
        "without_table_calls_ms": own, "table_calls_ms": reading,
        "own_extra_ms": round(own["window"] - own["none"], 1),
        "ratio": round(medians["window"] / medians["none"], 3),
    }
    print(f"\ncold batch of {len(records)} records into a rebuilt index; medians of {args.runs} interleaved runs:")
    print(f"  none in the window                     {medians['none']:7.1f} ms  {figures['noise']['none']}"
          f"  ({figures['table_requests_per_batch']['none']} BatchGetItem)")
    print(f"  {args.percent:>3}% ({len(chosen)} records) in the window   {medians['window']:7.1f} ms  "
          f"{figures['noise']['window']}  ({figures['table_requests_per_batch']['window']} BatchGetItem)")
    print(f"  = +{figures['extra_ms']} ms, {figures['ratio']:.2f}x, of which the BatchGetItem calls (moto, in "
          f"process) {reading} ms;")
    print(f"  without them: none {own['none']} ms, window {own['window']} ms = +{figures['own_extra_ms']} ms")
    common.write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
