"""CPU time of the handler's own work per batch: parse, collapse, convert, guard, bulk lines.

``Pipeline.run`` on the two workloads of bench/handler_bench.py (the cold batch, and a
hot-key batch of 1,000 records touching 100 items), against a store that answers at once from
memory: no network, no cluster, so what is left is our CPU time, which a loaded machine
barely moves (process time, not wall time). The store answers as the cluster would: the
cold batch's 400 earlier documents exist, every write succeeds.

Usage: ``python bench/cpu_bench.py --runs 30 [--profile FILE] [--json FILE]``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import handler_bench  # noqa: E402

INDEX = "cpu-initial"


class InstantStore:
    """Answers the guard's read and write from memory, as a healthy cluster would."""

    def __init__(self, existing: set[str]) -> None:
        from indexer.actions import Current

        self.existing = {doc_id: Current(1, n, 1) for n, doc_id in enumerate(existing)}
        self.seq_no = 10_000

    def current(self, pairs: Any, timeout: float) -> dict[Any, Any]:
        return {pair: self.existing.get(pair[1]) for pair in pairs}

    def bulk(self, body: bytes, timeout: float) -> dict[str, Any]:
        count = body.count(b"\n") // 2
        self.seq_no += count
        return {"errors": False, "items": [{"index": {"status": 200, "_seq_no": self.seq_no + n, "_primary_term": 1}}
                                           for n in range(count)]}


def main() -> int:
    parser = common.parser(__doc__)
    parser.add_argument("--runs", type=common.positive, default=30, help="batches per workload (default: 30)")
    parser.add_argument("--profile", metavar="FILE", help="also profile each workload with pyinstrument: FILE, FILE.hot")
    common.add_walk_flag(parser)
    args = parser.parse_args()
    walk = common.use_walk(args)

    from indexer.apply import Deadline
    from indexer.batch import Pipeline
    from indexer.layout import FixedTargets

    seed_records, cold_records = handler_bench.batch()
    existing = {doc_id for doc_id, _ in handler_bench.sources(seed_records)}
    hot_batches = [handler_bench.hot_batch(k) for k in range(1, args.runs + 2)]

    def pipeline() -> Pipeline:
        return Pipeline(store=InstantStore(existing), targets=FixedTargets([INDEX]), dead_letters=None,  # type: ignore[arg-type]
                        default_alias=handler_bench.ALIAS)

    cold_pipeline, hot_pipeline = pipeline(), pipeline()
    hot_next = iter(hot_batches)

    def cpu_of(pipeline_: Pipeline, records: list[dict[str, Any]]) -> float:
        """Process time of one batch through ``pipeline_``."""
        started = time.process_time()
        summary = pipeline_.run({"Records": records}, Deadline.after(600))
        seconds = time.process_time() - started
        if summary.failures or summary.dead_lettered:
            raise SystemExit(f"a batch failed: {summary.counts()}")
        return seconds

    def cold() -> float:
        written = getattr(cold_pipeline, "written", None)  # absent in earlier versions
        if written is not None:
            written.forget_index()
        return cpu_of(cold_pipeline, cold_records)

    def hot() -> float:
        return cpu_of(hot_pipeline, next(hot_next))

    results = common.interleaved({"cold": cold, "hot": hot}, args.runs, warmup=1)
    if args.profile:
        hot_next = iter([handler_bench.hot_batch(k) for k in range(10_000, 10_010)])
        common.profile(cold, 10, args.profile)
        common.profile(hot, 10, args.profile + ".hot")
    figures = {"benchmark": "cpu", "runs": args.runs, "walk": walk,
               "cold_cpu_ms": round(common.median(results["cold"]) * 1000, 2),
               "hot_cpu_ms": round(common.median(results["hot"]) * 1000, 2),
               "noise": {name: common.spread(values) for name, values in results.items()}}
    print(f"CPU per 1,000-record batch ({walk.upper()} walk), medians of {args.runs}: cold {figures['cold_cpu_ms']} ms "
          f"{figures['noise']['cold']}, hot keys {figures['hot_cpu_ms']} ms {figures['noise']['hot']}")
    common.write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
