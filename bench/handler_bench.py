"""The Lambda handler on a 1,000-record batch beside its ceiling, measured side by side in one run.

Batch: 1,000 records for 1,000 different items of the realistic 12-attribute shape
(bench/common.py): 600 INSERTs of new items, 300 MODIFYs and 100 REMOVEs of items the index
already holds (an earlier version, written before the clock starts).

Ours: ``indexer.handler.handler(event, context)`` called in this process, warm (clients built,
index targets cached, as in a warm Lambda container), with a moto dead-letter queue
(in-process; nothing fails, so it is never called). Its time covers parsing and converting
the records, the ordering guard's ``mget`` and the guarded bulk write.

Ceiling: ``elasticsearch.helpers.bulk`` of the same final documents (the converted images with
their bookkeeping, and tombstones for the REMOVEs), pre-built in memory as Python dicts, in one
request of 1,000 actions. No conversion, no read, no guard: the least any indexer must do.

Fairness: both sides write the same 1,000 ids into their own index, created afresh for every
run with the same settings and mappings and seeded with the same 400 earlier documents; both
leave refreshing to Elasticsearch; runs alternate which side goes first. Usage:
``python bench/handler_bench.py --runs 15 --json handler.json``.
"""

from __future__ import annotations

import contextlib
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

ALIAS = "bench-handler"
CEILING_INDEX = "bench-ceiling"
INSERTS, MODIFIES, REMOVES = 600, 300, 100
GOAL = 1.15


class TimedStore:
    """The handler's Elasticsearch adapter with a stopwatch on its reads and writes, to split
    the handler's time into mget, bulk and the rest (parsing, converting, deciding)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = {"mget": 0.0, "bulk": 0.0}

    def current(self, pairs: Any, timeout: float) -> Any:
        started = time.perf_counter()
        try:
            return self.inner.current(pairs, timeout)
        finally:
            self.seconds["mget"] += time.perf_counter() - started

    def bulk(self, body: bytes, timeout: float) -> Any:
        started = time.perf_counter()
        try:
            return self.inner.bulk(body, timeout)
        finally:
            self.seconds["bulk"] += time.perf_counter() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def batch() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(earlier records that seed the index, the 1,000-record batch)."""
    existing = range(INSERTS, INSERTS + MODIFIES + REMOVES)
    seed = [common.record(n, "INSERT", sequence=n) for n in existing]
    records = [common.record(n, "INSERT", sequence=10_000 + n) for n in range(INSERTS)]
    records += [common.record(n, "MODIFY", sequence=10_000 + n) for n in range(INSERTS, INSERTS + MODIFIES)]
    records += [common.record(n, "REMOVE", sequence=10_000 + n) for n in range(INSERTS + MODIFIES, INSERTS + MODIFIES + REMOVES)]
    random.Random(7).shuffle(records)  # the kinds interleaved, as a stream delivers them
    return seed, records


def sources(records: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    """(id, ``_source`` bytes) per record, exactly as the handler writes them."""
    from indexer.records import change_of

    changes = [change_of(record, position, ALIAS) for position, record in enumerate(records)]
    return [(change.doc_id, change.source) for change in changes]


def metrics_seconds(records: list[dict[str, Any]], runs: int = 201) -> float:
    """Median time of the handler's metrics work for this batch, apart from the cluster: dating
    the records, one acknowledgement per document, the lag, the figures and the EMF line."""
    from indexer import metrics
    from indexer.records import change_of

    changes = [change_of(record, position, ALIAS) for position, record in enumerate(records)]
    counts = {"records": len(records), "indexed": INSERTS + MODIFIES, "deleted": REMOVES}
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        batch = metrics.BatchMetrics()
        batch.observe_records(records)
        answered = batch.bulk_answered(batch.bulk_sent(), 1_000_000)
        for change in changes:
            batch.acknowledged(change.alias, change.doc_id, answered)
        batch.observe_applied(records, changes)
        document = metrics.emf_document(metrics.handler_figures(counts, batch), metrics.HANDLER_UNITS,
                                        metrics.DEFAULT_NAMESPACE, metrics.dimensions(ALIAS, "bench"), batch.wall() * 1000)
        metrics.emf_line(document)
        samples.append(time.perf_counter() - started)
    return common.median(samples)


def main() -> int:
    parser = common.parser(__doc__)
    common.add_es_flag(parser)
    parser.add_argument("--runs", type=common.positive, default=15, help="measured runs per side (default: 15)")
    parser.add_argument("--profile", metavar="FILE",
                        help="also profile three handler runs with pyinstrument and write the report to FILE")
    args = parser.parse_args()

    from elasticsearch import Elasticsearch, helpers
    from moto import mock_aws

    from indexer import handler as lambda_handler
    from indexer.layout import ALIAS_FILTER, index_body, initial_index

    seed_records, records = batch()
    seed = sources(seed_records)
    final = [{"_index": CEILING_INDEX, "_id": doc_id, "_source": json.loads(source)}
             for doc_id, source in sources(records)]
    event = {"Records": records}

    with common.elasticsearch(args.es_url) as es_url, mock_aws():
        import boto3

        os.environ.update(common.quiet_environment(es_url))
        os.environ.update(INDEX_NAME=ALIAS, AWS_ACCOUNT_ID_ENDPOINT_MODE="disabled")
        os.environ.pop("AWS_ENDPOINT_URL", None)  # moto intercepts in process
        os.environ["DLQ_URL"] = boto3.client("sqs").create_queue(QueueName="bench-dlq")["QueueUrl"]
        es = Elasticsearch(es_url, request_timeout=120)
        ours_index = initial_index(ALIAS)

        def fresh_index(index: str) -> None:
            """``index`` recreated with the common body and the 400 earlier documents."""
            es.indices.delete(index=index, ignore_unavailable=True)
            aliases = {ALIAS: {"filter": ALIAS_FILTER, "is_write_index": True}} if index == ours_index else None
            es.indices.create(index=index, **index_body(), aliases=aliases)
            lines = []
            for doc_id, source in seed:
                lines += [json.dumps({"create": {"_index": index, "_id": doc_id}}).encode(), source]
            response = es.bulk(operations=b"\n".join(lines) + b"\n", refresh=True)
            if response["errors"]:
                raise SystemExit(f"seeding {index} failed")

        lambda_handler.reset()
        pipeline = lambda_handler.pipeline()
        timed = TimedStore(pipeline.store)
        pipeline.store = timed
        pipeline.targets.store = timed
        splits: list[dict[str, float]] = []

        def ours() -> float:
            fresh_index(ours_index)
            before = dict(timed.seconds)
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # its EMF line (Lambda's log stream)
                response = lambda_handler.handler(event, common.LambdaContext(600))
            seconds = time.perf_counter() - started
            if response != {"batchItemFailures": []}:
                raise SystemExit(f"the handler failed records: {response}")
            splits.append({name: timed.seconds[name] - before[name] for name in before} | {"total": seconds})
            return seconds

        def ceiling() -> float:
            fresh_index(CEILING_INDEX)
            started = time.perf_counter()
            ok, errors = helpers.bulk(es, final, chunk_size=len(final), max_chunk_bytes=100 * 1024 * 1024)
            seconds = time.perf_counter() - started
            if ok != len(final) or errors:
                raise SystemExit(f"the ceiling's bulk failed: {errors}")
            return seconds

        def same_documents() -> None:
            es.indices.refresh(index=[ours_index, CEILING_INDEX])
            docs = {}
            for index in (ours_index, CEILING_INDEX):
                hits = es.search(index=index, query={"match_all": {}}, size=2000)["hits"]["hits"]
                docs[index] = {hit["_id"]: hit["_source"] for hit in hits}
            if docs[ours_index] != docs[CEILING_INDEX] or len(docs[ours_index]) != len(records):
                raise SystemExit("the handler and the ceiling left different documents")

        ours()
        ceiling()
        same_documents()  # checked once, before timing: both sides do the same work
        splits.clear()

        def report(run: int, figures: dict[str, float]) -> None:
            print(f"run {run + 1:>2}: handler {figures['ours'] * 1000:7.1f} ms   "
                  f"ceiling {figures['ceiling'] * 1000:7.1f} ms", flush=True)

        results = common.interleaved({"ours": ours, "ceiling": ceiling}, args.runs, warmup=1, on_run=report)
        measured = splits[1:]  # without the warm-up round (and before any profiled runs)
        if args.profile:
            common.profile(ours, 3, args.profile)
        lambda_handler.reset()
        es.indices.delete(index=[ours_index, CEILING_INDEX], ignore_unavailable=True)

    ours_ms = common.median(results["ours"]) * 1000
    ceiling_ms = common.median(results["ceiling"]) * 1000
    split = {name: round(common.median([s[name] for s in measured]) * 1000, 1) for name in ("mget", "bulk", "total")}
    split["rest"] = round(split["total"] - split["mget"] - split["bulk"], 1)
    metrics_ms = metrics_seconds(records) * 1000
    ratio = ours_ms / ceiling_ms
    figures = {
        "benchmark": "handler",
        "records": len(records), "inserts": INSERTS, "modifies": MODIFIES, "removes": REMOVES, "runs": args.runs,
        "ours_ms": round(ours_ms, 1), "ceiling_ms": round(ceiling_ms, 1), "ratio": round(ratio, 3),
        "goal": f"<= {GOAL}x the ceiling", "goal_ratio": GOAL, "met": ratio <= GOAL,
        "noise": {"ours": common.spread(results["ours"]), "ceiling": common.spread(results["ceiling"])},
        "best_ours_ms": round(min(results["ours"]) * 1000, 1), "best_ceiling_ms": round(min(results["ceiling"]) * 1000, 1),
        "ours_split_ms": split,
        # Part of "rest": what counting, the lag and the EMF line cost per 1,000-record batch.
        "metrics_ms": round(metrics_ms, 2), "metrics_share": round(metrics_ms / ours_ms, 4),
    }
    print(f"\nmedians of {args.runs} runs, {len(records)} records ({INSERTS} INSERT, {MODIFIES} MODIFY, {REMOVES} REMOVE):")
    print(f"  ceiling (helpers.bulk of the final documents): {ceiling_ms:7.1f} ms  {figures['noise']['ceiling']}")
    print(f"  handler:                                       {ours_ms:7.1f} ms  {figures['noise']['ours']}"
          f"  = {ratio:.2f}x the ceiling (goal <= {GOAL}x: {'met' if figures['met'] else 'MISSED'})")
    print(f"  fastest runs: handler {figures['best_ours_ms']} ms, ceiling {figures['best_ceiling_ms']} ms "
          f"= {figures['best_ours_ms'] / figures['best_ceiling_ms']:.2f}x")
    print(f"  handler split: mget {split['mget']} ms, bulk {split['bulk']} ms, "
          f"parse+convert+guard {split['rest']} ms")
    print(f"  of which metrics (counts, lag, EMF line): {figures['metrics_ms']} ms "
          f"= {figures['metrics_share'] * 100:.2f}% of the handler")
    common.write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
