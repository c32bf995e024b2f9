"""Local engine from export files: docs/s at 1 and 2 worker processes beside a parallel_bulk ceiling.

The export (AWS's layout: manifests and data/*.json.gz of DynamoDB JSON lines, written by
tests/export_layout.py) of ``--items`` realistic 12-attribute items sits in a moto server's S3.
Each run loads every file into a fresh index:

- ceiling: ``elasticsearch.helpers.parallel_bulk`` of the documents the engine writes (bookkeeping
  field included), converted beforehand (not timed),
  ``thread_count`` = workers, the same bulk size, op_type create, into an index with no replicas
  and no refresh — what the cluster takes when conversion and reading cost nothing;
- engine: ``replay.engines.run_local`` on the same units (download, md5 and count check, gunzip,
  parse, convert, guarded create), with that many worker processes.

Both sides run interleaved, median of ``--runs``. Figures from a loaded machine are marked so.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

from common import ROOT, image, parser, write_json

sys.path.insert(0, str(ROOT / "tests"))

import es_local  # noqa: E402
import export_layout  # noqa: E402
import moto_local  # noqa: E402

BUCKET = "bench-exports"


def upload(items: int, per_file: int) -> list:
    """The export in S3; its units as the product plans them from the manifest."""
    import boto3

    from replay import export as exports

    export_layout.ITEMS_PER_FILE = per_file
    lines = [json.dumps({"Item": image(n)}, separators=(",", ":")) for n in range(items)]
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/Images/export/01764000000000-bench"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for key, body in export_layout.layout(lines, arn, "arn:aws:dynamodb:us-east-1:123456789012:table/Images",
                                          BUCKET, "bench").items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    units, _ = exports.plan(s3, {"S3Bucket": BUCKET, "S3Prefix": "bench", "ExportArn": arn})
    return units


def fresh_index(es, name: str) -> None:
    from indexer.layout import index_body
    from replay.buildsettings import building_body

    body, _ = building_body(index_body())
    es.indices.create(index=name, **body)


def finish(es, name: str, items: int) -> None:
    es.indices.put_settings(index=name, settings={"index": {"refresh_interval": None}})
    es.indices.refresh(index=name)
    count = es.count(index=name)["count"]
    es.indices.delete(index=name)
    if count != items:
        raise SystemExit(f"{name}: {count} documents, expected {items}")


def ceiling(es, documents: list[tuple[str, dict]], workers: int, bulk_size: int) -> float:
    from elasticsearch import helpers

    name = f"ceiling-{time.time_ns()}"
    fresh_index(es, name)
    actions = ({"_op_type": "create", "_index": name, "_id": doc_id, "_source": source} for doc_id, source in documents)
    started = time.perf_counter()
    for ok, info in helpers.parallel_bulk(es, actions, thread_count=workers, chunk_size=bulk_size,
                                          max_chunk_bytes=5 * 1024 * 1024):
        if not ok:
            raise SystemExit(f"ceiling bulk failed: {info}")
    seconds = time.perf_counter() - started
    finish(es, name, len(documents))
    return seconds


def engine(es, units: list, workers: int, bulk_size: int, items: int) -> float:
    import threading

    from indexer.apply import RetryPolicy
    from indexer.backends import store_for
    from indexer.settings import Settings
    from replay import table as tables
    from replay.engines import run_local
    from replay.progress import Progress
    from replay.sources import s3_client
    from replay.worker import Target, Worker

    name = f"engine-{time.time_ns()}"
    fresh_index(es, name)
    table = tables.TableInfo("Images", ("pk",), {"pk": "S"}, None, None, items)
    target = Target(name, "bench-assets", table, bulk_size=bulk_size)
    policy = RetryPolicy()
    inline = lambda: Worker(target, store_for(Settings.from_env()), None, s3_client(), policy)  # noqa: E731
    started = time.perf_counter()
    done = run_local(units, target, os.environ, workers, policy, Progress("bench", items, enabled=False), inline,
                     threading.Event())
    seconds = time.perf_counter() - started
    if done.read != items or done.refused:
        raise SystemExit(f"engine read {done.read} of {items}, refused {done.refused[:3]}")
    finish(es, name, items)
    return seconds


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--items", type=int, default=200_000)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--per-file", type=int, default=20_000, help="items per export data file")
    p.add_argument("--bulk-size", type=int, default=1000)
    p.add_argument("--loaded", action="store_true", help="mark the figures as measured on a loaded machine")
    args = p.parse_args()

    from elasticsearch import Elasticsearch

    from indexer import logs
    import orjson

    from replay import table as tables
    from replay.full import snapshot_changes

    logs.configure("WARNING", to_stderr=True)

    instance = es_local.start(name="bench-export", fresh=True, heap="1g")
    moto, moto_url = moto_local.start()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=moto_url, ELASTICSEARCH_URL=instance.url, TABLE_NAME="Images",
                      LOG_LEVEL="WARNING", METRICS="off")
    try:
        started = time.perf_counter()
        units = upload(args.items, args.per_file)
        print(f"export of {args.items} items in {len(units)} files uploaded in {time.perf_counter() - started:.1f}s")
        # The very documents the engine writes (its bookkeeping field included), converted here
        # beforehand: the ceiling differs from the engine only by the engine's own work.
        table = tables.TableInfo("Images", ("pk",), {"pk": "S"}, None, None, args.items)
        changes, refused = snapshot_changes("bench-assets", table, [image(n) for n in range(args.items)])
        assert not refused, refused[:3]
        documents = [(change.doc_id, orjson.loads(change.source)) for change in changes]
        es = Elasticsearch(instance.url, request_timeout=300)
        figures: dict = {"items": args.items, "files": len(units), "bulk_size": args.bulk_size, "runs": args.runs,
                         "cores": os.cpu_count(), "loaded_machine": args.loaded}
        for workers in (1, 2):
            ceilings, engines = [], []
            for run in range(args.runs):
                ceilings.append(ceiling(es, documents, workers, args.bulk_size))
                engines.append(engine(es, units, workers, args.bulk_size, args.items))
                print(f"workers {workers} run {run + 1}: ceiling {ceilings[-1]:.1f}s, engine {engines[-1]:.1f}s",
                      flush=True)
            c, e = statistics.median(ceilings), statistics.median(engines)
            figures[f"workers_{workers}"] = {"ceiling_docs_per_s": round(args.items / c),
                                             "engine_docs_per_s": round(args.items / e), "ratio": round(c / e, 3)}
        print(f"\nmedians of {args.runs} runs, {args.items} items from {len(units)} export files"
              f"{' (LOADED machine: other work was running)' if args.loaded else ''}:")
        for workers in (1, 2):
            f = figures[f"workers_{workers}"]
            print(f"  {workers} worker(s): ceiling (parallel_bulk, pre-converted) {f['ceiling_docs_per_s']:>6} docs/s, "
                  f"local engine {f['engine_docs_per_s']:>6} docs/s = {f['ratio']:.2f}x")
        write_json(args.json, figures)
    finally:
        moto.terminate()
        es_local.stop("bench-export")
    return 0


if __name__ == "__main__":
    sys.exit(main())
