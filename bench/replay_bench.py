"""Replay throughput beside its ceiling, measured side by side in one run.

Ceiling: a bare parallel scan feeding ``elasticsearch.helpers.bulk`` (same segments, same
conversion and ids, no guard, no rebuild protocol). Replay: ``python -m replay --full``'s
rebuild (guarded snapshot writes, heartbeat, alias swap), timed over its scan-and-write phase
and end to end. The table lives in a moto server (a separate process, like a real endpoint).
Runs alternate; medians are printed. Usage: ``python bench/replay_bench.py --items 20000``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import es_local  # noqa: E402
import moto_local  # noqa: E402

TABLE = "BenchAssets"


def item(n: int) -> dict:
    """A realistic ~12-attribute asset record (about 600 bytes)."""
    return {
        "pk": {"S": f"images/{n:07d}.jpg"}, "bucket": {"S": "images-in"}, "size": {"N": str(1000 + n * 7)},
        "contentType": {"S": "image/jpeg"}, "etag": {"S": f"{n:032x}"}, "width": {"N": "1920"},
        "height": {"N": "1080"}, "ratio": {"N": "1.7777777777777777"}, "uploaded": {"S": "2026-11-27T00:00:00Z"},
        "tags": {"SS": ["cat", "cute", f"batch-{n % 50}"]},
        "meta": {"M": {"camera": {"S": "X100V"}, "iso": {"N": "400"}, "gps": {"L": [{"N": "52.52"}, {"N": "13.40"}]}}},
        "public": {"BOOL": n % 2 == 0},
    }


def fill(count: int) -> None:
    import boto3

    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(
        TableName=TABLE, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )

    def load(start: int) -> None:
        client = boto3.client("dynamodb")
        for chunk in range(start, min(start + 2500, count), 25):
            batch = [{"PutRequest": {"Item": item(n)}} for n in range(chunk, min(chunk + 25, count))]
            client.batch_write_item(RequestItems={TABLE: batch})

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(load, range(0, count, 2500)))


def ceiling(es_url: str, segments: int, bulk_size: int) -> float:
    """Seconds for a bare parallel scan + helpers.bulk into a fresh index, refreshed."""
    import boto3
    from elasticsearch import Elasticsearch, helpers

    from indexer.convert import item as convert_item
    from indexer.ids import document_id
    from indexer.layout import index_body

    es = Elasticsearch(es_url, request_timeout=120)
    name = f"ceiling-{time.time_ns()}"
    body = index_body()
    body["settings"] = {"index": {"refresh_interval": "-1"}}
    es.indices.create(index=name, **body)
    started = time.perf_counter()

    def segment(n: int) -> None:
        client = boto3.client("dynamodb")
        request = {"TableName": TABLE, "Segment": n, "TotalSegments": segments, "ConsistentRead": True,
                   "Limit": min(bulk_size, 1000)}
        while True:
            page = client.scan(**request)
            actions = [{"_index": name, "_id": document_id({"pk": it["pk"]}), "_source": convert_item(it)}
                       for it in page["Items"]]
            helpers.bulk(es, actions, chunk_size=bulk_size)
            if "LastEvaluatedKey" not in page:
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    with ThreadPoolExecutor(segments) as pool:
        list(pool.map(segment, range(segments)))
    es.indices.put_settings(index=name, settings={"index": {"refresh_interval": None}})
    es.indices.refresh(index=name)
    seconds = time.perf_counter() - started
    es.indices.delete(index=name)
    return seconds


def replay(segments: int, bulk_size: int) -> tuple[float, float]:
    """(scan-and-write seconds as the replay reports them, end-to-end seconds)."""
    from replay import cli

    out = io.StringIO()
    started = time.perf_counter()
    with redirect_stdout(out):
        code = cli.main(["--full", "--segments", str(segments), "--bulk-size", str(bulk_size), "--no-progress"])
    total = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"replay failed:\n{out.getvalue()}")
    found = re.search(r"scanned (\d+) items in ([0-9.]+)s", out.getvalue())
    assert found, out.getvalue()
    return float(found.group(2)), total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--segments", type=int, default=4)
    parser.add_argument("--bulk-size", type=int, default=1000)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    instance = es_local.start(name="bench", fresh=True, heap="1g")
    moto, moto_url = moto_local.start()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=moto_url, ELASTICSEARCH_URL=instance.url, TABLE_NAME=TABLE,
                      INDEX_NAME="bench-assets", TARGETS_TTL_SECONDS="0.05", LOG_LEVEL="WARNING")
    try:
        started = time.perf_counter()
        fill(args.items)
        print(f"table filled with {args.items} items in {time.perf_counter() - started:.1f}s (moto server)")
        ceilings, scans, totals = [], [], []
        for run in range(args.runs):
            ceilings.append(ceiling(instance.url, args.segments, args.bulk_size))
            scan, total = replay(args.segments, args.bulk_size)
            scans.append(scan)
            totals.append(total)
            print(f"run {run + 1}: ceiling {ceilings[-1]:.2f}s, replay scan+write {scan:.2f}s, "
                  f"replay end to end {total:.2f}s")
        c, s, t = (statistics.median(x) for x in (ceilings, scans, totals))
        figures = {
            "items": args.items, "segments": args.segments, "bulk_size": args.bulk_size, "runs": args.runs,
            "ceiling_docs_per_s": round(args.items / c), "replay_docs_per_s": round(args.items / s),
            "replay_end_to_end_docs_per_s": round(args.items / t),
            "ratio_scan_write": round(c / s, 3), "ratio_end_to_end": round(c / t, 3),
        }
        print(f"\nmedians of {args.runs} runs, {args.items} items, {args.segments} segments, bulk {args.bulk_size}:")
        print(f"  ceiling (scan + helpers.bulk):  {figures['ceiling_docs_per_s']:>7} docs/s")
        print(f"  replay, scan and write phase:   {figures['replay_docs_per_s']:>7} docs/s  "
              f"= {figures['ratio_scan_write']:.2f}x the ceiling")
        print(f"  replay, end to end (incl. waits for live writers and the swap): "
              f"{figures['replay_end_to_end_docs_per_s']} docs/s = {figures['ratio_end_to_end']:.2f}x")
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        moto.terminate()
        es_local.stop("bench")
    return 0


if __name__ == "__main__":
    sys.exit(main())
