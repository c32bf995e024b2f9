"""The Lambda handler on two workloads beside their ceilings, measured side by side in one run.

Cold batch: 1,000 records for 1,000 different items of the realistic 12-attribute shape
(bench/common.py): 600 INSERTs of new items, 300 MODIFYs and 100 REMOVEs of items the index
already holds (an earlier version, written before the clock starts). Every side writes into its
own index, created afresh for every run with the same settings and mappings and seeded with the
same 400 earlier documents. The handler's cache of what it wrote is emptied before each run:
these are items the container has not written.

Hot keys: a shard's steady state. Invocation after invocation of one warm container, each a
1,000-record batch of MODIFYs touching the same 100 items (10 records per item, newer every
batch); every side keeps writing its own index, never recreated.

Ours: ``indexer.handler.handler(event, context)`` called in this process, warm (clients built,
index targets cached, as in a warm Lambda container), with a moto dead-letter queue
(in-process; nothing fails, so it is never called). Its time covers parsing and converting
the records, the ordering guard (its ``mget``, where it needs one, made on a thread while the
images convert) and the guarded bulk write. Its split: ``mget`` made by the guard itself,
``mget`` read ahead (beside the conversion, so not subtracted), bulk, and the rest with the
CPU time our process spent on it (the rest's wall time minus its CPU time is waiting: for a
read ahead that took longer than converting, or for a core on a loaded machine).

Ceilings, each with the final documents (the converted images with their bookkeeping, and
tombstones for REMOVEs) pre-built in memory as Python dicts:

* ``bulk``: ``elasticsearch.helpers.bulk`` of the final documents, one request: no conversion,
  no read, no guard: the least any indexer must do;
* ``mget + bulk``: an ``mget`` of every final document's id, then the same ``helpers.bulk``: the
  least an order-safe writer does without scripts;
* ``hand-written``, for the record: the Lambda users write by hand, boto3's ``TypeDeserializer``
  on every record and ``helpers.bulk`` of all of them (deletes for REMOVEs), no collapse, no
  guard. Its images are handed to it with binary values already as bytes (on a real event
  TypeDeserializer raises TypeError on them).

Runs alternate which side goes first (ABBA), after 15 unmeasured rounds of every side
(``--warmup``): the JVM of the Elasticsearch this starts compiles its hot paths for many rounds,
and a cluster in service is warm. Everything leaves refreshing to Elasticsearch.
Usage: ``python bench/handler_bench.py --runs 15 --json handler.json``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import gc
import io
import json
import os
import random
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

ALIAS = "bench-handler"
INSERTS, MODIFIES, REMOVES = 600, 300, 100
HOT_ITEMS, HOT_RECORDS = 100, 1000
#: Cold batch: at most this times the ``mget`` + bulk ceiling; hot keys: this times plain bulk.
GOAL, HOT_GOAL = 1.1, 1.5
SIDES = ("ours", "bulk", "mget_bulk", "hand_written")
#: Rounds run before measuring: the benchmark starts its own Elasticsearch, whose JVM compiles
#: its hot paths during the first rounds. With one round of warm-up every side got faster
#: through the measured runs (the cold batch's ceiling from ~95 to ~75 ms by the 9th round), and
#: medians of separate runs of this script differed by a fifth (cold batch 0.97x to 1.31x the
#: same hour). A cluster in service is warm.
WARMUP_ROUNDS = 15


class TimedStore:
    """The handler's Elasticsearch adapter with a stopwatch on its reads and writes, to split
    the handler's time into mget, bulk and the rest (parsing, converting, deciding)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        #: Wall time of each kind of request, and the CPU time of the thread that made it (the
        #: client's serialising and parsing). A read made ahead, on its own thread while the
        #: handler converts, is counted apart: it overlaps the handler's other work.
        self.seconds = {"mget": 0.0, "bulk": 0.0, "mget_ahead": 0.0,
                        "mget_cpu": 0.0, "bulk_cpu": 0.0, "mget_ahead_cpu": 0.0}

    def _timed(self, name: str, call: Callable[[], Any]) -> Any:
        started, cpu_started = time.perf_counter(), time.thread_time()
        try:
            return call()
        finally:
            self.seconds[name] += time.perf_counter() - started
            self.seconds[name + "_cpu"] += time.thread_time() - cpu_started

    def current(self, pairs: Any, timeout: float) -> Any:
        name = "mget" if threading.current_thread() is threading.main_thread() else "mget_ahead"
        return self._timed(name, lambda: self.inner.current(pairs, timeout))

    def bulk(self, body: bytes, timeout: float) -> Any:
        return self._timed("bulk", lambda: self.inner.bulk(body, timeout))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class GcClock:
    """Time spent in the garbage collector (``gc.callbacks``), since ``seconds`` was last reset."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections += 1


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


def hot_batch(k: int) -> list[dict[str, Any]]:
    """The ``k``-th batch of the hot-key workload: MODIFYs of ``HOT_ITEMS`` items, each newer
    than every record of batch ``k - 1``."""
    base = 1_000_000 + k * HOT_RECORDS
    return [common.record(n % HOT_ITEMS, "MODIFY", sequence=base + n) for n in range(HOT_RECORDS)]


def plain(value: Any) -> Any:
    """What a hand-written Lambda does to TypeDeserializer's output before JSON: Decimals to
    numbers, sets to lists, Binary to base64."""
    from boto3.dynamodb.types import Binary

    if isinstance(value, dict):
        return {name: plain(item) for name, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, set):
        return sorted(plain(item) for item in value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Binary):
        return base64.b64encode(value.value).decode("ascii")
    return value


def hand_written_input(records: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """(event name, keys, image) per record, binary values as bytes (see the module docstring)."""
    return [(r["eventName"], common.to_boto3_shape(r["dynamodb"]["Keys"]),
             common.to_boto3_shape(r["dynamodb"]["NewImage"]) if "NewImage" in r["dynamodb"] else None)
            for r in records]


def hand_written_actions(index: str, shaped: list[tuple[str, dict[str, Any], dict[str, Any] | None]]) -> list[dict[str, Any]]:
    """The hand-written Lambda's work: every record deserialized and turned into an action."""
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    actions = []
    for event_name, keys, image in shaped:
        doc_id = "|".join(str(deserializer.deserialize(keys[name])) for name in sorted(keys))
        if event_name == "REMOVE":
            actions.append({"_op_type": "delete", "_index": index, "_id": doc_id})
        else:
            document = plain({name: deserializer.deserialize(value) for name, value in (image or {}).items()})
            actions.append({"_index": index, "_id": doc_id, "_source": document})
    return actions


def final_documents(records: list[dict[str, Any]], index: str) -> list[dict[str, Any]]:
    """The documents the handler leaves for ``records``, as bulk actions for ``index``."""
    latest = {doc_id: source for doc_id, source in sources(records)}  # the last record per id wins
    return [{"_index": index, "_id": doc_id, "_source": json.loads(source)} for doc_id, source in latest.items()]


def main() -> int:
    parser = common.parser(__doc__)
    common.add_es_flag(parser)
    parser.add_argument("--runs", type=common.positive, default=15, help="measured runs per side and workload (default: 15)")
    parser.add_argument("--warmup", type=int, default=WARMUP_ROUNDS,
                        help=f"unmeasured rounds of every side first, per workload (default: {WARMUP_ROUNDS})")
    parser.add_argument("--profile", metavar="FILE",
                        help="also profile three handler runs of each workload with pyinstrument and write the "
                             "reports to FILE (cold) and FILE.hot")
    common.add_walk_flag(parser)
    args = parser.parse_args()
    walk = common.use_walk(args)

    from elasticsearch import Elasticsearch, helpers
    from moto import mock_aws

    from indexer import handler as lambda_handler
    from indexer.layout import ALIAS_FILTER, index_body, initial_index

    seed_records, records = batch()
    seed = sources(seed_records)
    cold_shaped = hand_written_input(records)
    seed_shaped = hand_written_input(seed_records)

    with common.elasticsearch(args.es_url) as es_url, mock_aws():
        import boto3

        os.environ.update(common.quiet_environment(es_url))
        os.environ.update(INDEX_NAME=ALIAS, AWS_ACCOUNT_ID_ENDPOINT_MODE="disabled")
        os.environ.pop("AWS_ENDPOINT_URL", None)  # moto intercepts in process
        os.environ["DLQ_URL"] = boto3.client("sqs").create_queue(QueueName="bench-dlq")["QueueUrl"]
        es = Elasticsearch(es_url, request_timeout=120)
        ours_index = initial_index(ALIAS)
        index_of = {"ours": ours_index, "bulk": "bench-ceiling", "mget_bulk": "bench-mget", "hand_written": "bench-hand"}

        def fresh_index(index: str, seeded: bool = True) -> None:
            """``index`` recreated with the common body (and the 400 earlier documents)."""
            es.indices.delete(index=index, ignore_unavailable=True)
            aliases = {ALIAS: {"filter": ALIAS_FILTER, "is_write_index": True}} if index == ours_index else None
            es.indices.create(index=index, **index_body(), aliases=aliases)
            if not seeded:
                return
            if index == index_of["hand_written"]:  # its own documents, as it would have written them
                response = helpers.bulk(es, hand_written_actions(index, seed_shaped), refresh=True)
                return
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
        splits: dict[str, list[dict[str, float]]] = {"cold": [], "hot": []}
        collector = GcClock()
        gc.callbacks.append(collector)

        def forget_written() -> None:
            """Empty the container's cache of what it wrote (absent before that cache existed:
            this script also measures earlier versions, for before/after figures)."""
            written = getattr(pipeline, "written", None)
            if written is not None:
                written.forget_index()

        def handler_run(workload: str, batch_event: dict[str, Any]) -> float:
            before = dict(timed.seconds)
            collector.seconds = 0.0
            cpu_started = time.process_time()
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # its EMF line (Lambda's log stream)
                response = lambda_handler.handler(batch_event, common.LambdaContext(600))
            seconds = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            if response != {"batchItemFailures": []}:
                raise SystemExit(f"the handler failed records: {response}")
            splits[workload].append({name: timed.seconds[name] - before[name] for name in before}
                                    | {"total": seconds, "cpu": cpu, "gc": collector.seconds})
            return seconds

        def bulk_of(actions: list[dict[str, Any]]) -> None:
            ok, errors = helpers.bulk(es, actions, chunk_size=max(len(actions), 1), max_chunk_bytes=100 * 1024 * 1024)
            if ok != len(actions) or errors:
                raise SystemExit(f"a ceiling's bulk failed: {errors}")

        def mget_of(index: str, actions: list[dict[str, Any]]) -> None:
            es.mget(index=index, ids=[action["_id"] for action in actions], source_includes=["_ddb.seq"])

        def sides_for(workload: str, batch_of: Callable[[], list[dict[str, Any]]]) -> dict[str, Callable[[], float]]:
            """The four sides of ``workload``; ``batch_of(side)`` gives the side its next batch
            (with its final documents and hand-written input), built before its clock starts."""

            def ours() -> float:
                records_now, _, _ = batch_of("ours")
                if workload == "cold":
                    fresh_index(ours_index)
                    forget_written()
                return handler_run(workload, {"Records": records_now})

            def ceiling(name: str) -> Callable[[], float]:
                def run() -> float:
                    records_now, finals, shaped = batch_of(name)
                    if workload == "cold":
                        fresh_index(index_of[name])
                    actions = [{**action, "_index": index_of[name]} for action in finals]
                    started = time.perf_counter()
                    if name == "mget_bulk":
                        mget_of(index_of[name], actions)
                    if name == "hand_written":
                        bulk_of(hand_written_actions(index_of[name], shaped))
                    else:
                        bulk_of(actions)
                    return time.perf_counter() - started
                return run

            return {"ours": ours, "bulk": ceiling("bulk"), "mget_bulk": ceiling("mget_bulk"),
                    "hand_written": ceiling("hand_written")}

        cold_finals = final_documents(records, "x")

        def cold_batch(side: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any]:
            return records, cold_finals, cold_shaped

        @functools.lru_cache(maxsize=2)
        def hot_round(k: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any]:
            hot = hot_batch(k)
            return hot, final_documents(hot, "x"), hand_written_input(hot)

        hot_counters = {name: 0 for name in SIDES}

        def next_hot_batch(side: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any]:
            hot_counters[side] += 1
            return hot_round(hot_counters[side])

        def same_documents(indices: list[str]) -> None:
            es.indices.refresh(index=indices)
            docs = {}
            for index in indices:
                hits = es.search(index=index, query={"match_all": {}}, size=2000)["hits"]["hits"]
                docs[index] = {hit["_id"]: hit["_source"] for hit in hits}
            first = docs[indices[0]]
            if any(docs[index] != first for index in indices[1:]):
                raise SystemExit(f"the handler and its ceilings left different documents in {indices}")

        def report(workload: str) -> Callable[[int, dict[str, float]], None]:
            def on_run(run: int, figures: dict[str, float]) -> None:
                print(f"{workload} run {run + 1:>2}: " + "   ".join(
                    f"{name} {figures[name] * 1000:7.1f} ms" for name in SIDES), flush=True)
            return on_run

        # Cold: both kinds of ceilings leave the handler's documents (checked once, before timing).
        cold_sides = sides_for("cold", cold_batch)
        for name in ("ours", "bulk", "mget_bulk"):
            cold_sides[name]()
        same_documents([ours_index, index_of["bulk"], index_of["mget_bulk"]])
        splits["cold"].clear()
        cold = common.interleaved(cold_sides, args.runs, warmup=args.warmup, on_run=report("cold"))
        cold_splits = splits["cold"][1:]  # without the warm-up round
        if args.profile:
            common.profile(cold_sides["ours"], 3, args.profile)

        # Hot: every side starts from an empty index and a few warm-up invocations.
        for name in SIDES:
            fresh_index(index_of[name], seeded=False)
        forget_written()
        hot_sides = sides_for("hot", next_hot_batch)
        for _ in range(3):
            for name in SIDES:
                hot_sides[name]()
        same_documents([ours_index, index_of["bulk"], index_of["mget_bulk"]])
        splits["hot"].clear()
        hot = common.interleaved(hot_sides, args.runs, warmup=args.warmup, on_run=report("hot"))
        hot_splits = splits["hot"][1:]
        if args.profile:
            common.profile(hot_sides["ours"], 3, args.profile + ".hot")
        lambda_handler.reset()
        es.indices.delete(index=list(index_of.values()), ignore_unavailable=True)

    def summarised(results: dict[str, list[float]], measured: list[dict[str, float]]) -> dict[str, Any]:
        medians = {name: round(common.median(values) * 1000, 1) for name, values in results.items()}
        def median_ms(of: Callable[[dict[str, float]], float]) -> float:
            return round(common.median([of(s) for s in measured]) * 1000, 1)

        split = {name: median_ms(lambda s: s[name]) for name in ("mget", "mget_ahead", "bulk", "total", "gc")}
        # Includes waiting for a read made ahead, where it took longer than converting.
        split["rest"] = median_ms(lambda s: s["total"] - s["mget"] - s["bulk"])
        # Our CPU time outside the cluster calls: about what "rest" is on an idle machine.
        split["rest_cpu"] = median_ms(lambda s: s["cpu"] - s["mget_cpu"] - s["mget_ahead_cpu"] - s["bulk_cpu"])
        return {"median_ms": medians, "noise": {name: common.spread(values) for name, values in results.items()},
                "best_ms": {name: round(min(values) * 1000, 1) for name, values in results.items()},
                "ours_split_ms": split,
                "ratio_bulk": round(medians["ours"] / medians["bulk"], 3),
                "ratio_mget_bulk": round(medians["ours"] / medians["mget_bulk"], 3),
                "ratio_hand_written": round(medians["ours"] / medians["hand_written"], 3)}

    cold_figures = summarised(cold, cold_splits)
    metrics_ms = metrics_seconds(records) * 1000
    hot_figures = summarised(hot, hot_splits)
    cold_figures.update(goal=f"<= {GOAL}x mget + bulk", goal_ratio=GOAL, met=cold_figures["ratio_mget_bulk"] <= GOAL,
                        records=len(records), inserts=INSERTS, modifies=MODIFIES, removes=REMOVES)
    hot_figures.update(goal=f"<= {HOT_GOAL}x bulk", goal_ratio=HOT_GOAL, met=hot_figures["ratio_bulk"] <= HOT_GOAL,
                       records=HOT_RECORDS, items=HOT_ITEMS)
    figures = {
        "benchmark": "handler", "runs": args.runs, "walk": walk,
        # The cold batch's figures also at the top level, as earlier runs recorded them.
        "ours_ms": cold_figures["median_ms"]["ours"], "ceiling_ms": cold_figures["median_ms"]["bulk"],
        "mget_ceiling_ms": cold_figures["median_ms"]["mget_bulk"], "ratio": cold_figures["ratio_bulk"],
        "goal": cold_figures["goal"], "goal_ratio": GOAL, "met": cold_figures["met"] and hot_figures["met"],
        "cold": cold_figures, "hot": hot_figures,
        # Part of "rest": what counting, the lag and the EMF line cost per 1,000-record batch.
        "metrics_ms": round(metrics_ms, 2), "metrics_share": round(metrics_ms / cold_figures["median_ms"]["ours"], 4),
    }
    labels = {"bulk": "helpers.bulk of the final documents", "mget_bulk": "mget + helpers.bulk",
              "hand_written": "hand-written (TypeDeserializer + bulk of every record)"}
    for workload, f, goal_side in (("cold batch: 1,000 records of 1,000 items", cold_figures, "mget_bulk"),
                                   ("hot keys: 1,000 records of 100 items, warm container", hot_figures, "bulk")):
        print(f"\n{workload}; medians of {args.runs} interleaved runs; the {walk.upper()} walk converts:")
        for name in ("bulk", "mget_bulk", "hand_written"):
            print(f"  {labels[name]:<56} {f['median_ms'][name]:7.1f} ms  {f['noise'][name]}")
        print(f"  {'handler':<56} {f['median_ms']['ours']:7.1f} ms  {f['noise']['ours']}")
        print(f"  = {f['ratio_bulk']:.2f}x bulk, {f['ratio_mget_bulk']:.2f}x mget + bulk, "
              f"{f['ratio_hand_written']:.2f}x hand-written (goal {f['goal']}: {'met' if f['met'] else 'MISSED'})")
        split = f["ours_split_ms"]
        print(f"  handler split: mget {split['mget']} ms (and {split['mget_ahead']} ms read ahead, "
              f"beside converting), bulk {split['bulk']} ms, "
              f"parse+convert+guard {split['rest']} ms (of it CPU {split['rest_cpu']} ms; "
              f"garbage collection {split['gc']} ms in all)")
    print(f"\n  of which metrics (counts, lag, EMF line): {figures['metrics_ms']} ms "
          f"= {figures['metrics_share'] * 100:.2f}% of the cold handler run")
    common.write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
