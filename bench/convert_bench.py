"""Conversion throughput: stream images to serialized bulk lines, beside boto3's TypeDeserializer.

Ours: ``indexer.records.change_of`` on each stream record (parse, validate, document id,
convert the NewImage, add bookkeeping, serialize the source once with orjson) plus
``indexer.actions.bulk_body`` (the action lines and the NDJSON body).

Ceiling: what a hand-written Lambda does: boto3's ``TypeDeserializer`` on the Keys and the
NewImage, then ``json.dumps`` of an action line and of the document, with a ``default`` for
Decimal (int when whole, else float), sets (sorted) and Binary (base64). It is given what it
can take: binary values as bytes (Lambda delivers base64 text, which it refuses with a
TypeError) and numbers of at most 38 digits (it raises ``decimal.Inexact`` on 39); that
reshaping is done before the clock starts.

Both sides get the same 10,000 realistic 12-attribute images (bench/common.py) and must
produce the same documents (checked before timing; tests/test_convert_equivalence.py checks
every type). No Elasticsearch is needed. Runs alternate; medians of wall time and of CPU time
are printed (CPU time is steadier on a busy machine). Usage:
``python bench/convert_bench.py --images 10000 --runs 9 --json convert.json``.
"""

from __future__ import annotations

import base64
import gc
import json
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

ALIAS = "images"
INDEX = "images-initial"
GOAL = 4.0


def records(count: int) -> list[dict[str, Any]]:
    return [common.record(n, "INSERT" if n % 3 else "MODIFY", sequence=n) for n in range(count)]


def ours_function(batch: list[dict[str, Any]]) -> Callable[[], bytes]:
    from indexer.actions import Write, bulk_body
    from indexer.records import change_of

    def ours() -> bytes:
        return bulk_body([Write(INDEX, change_of(record, position, ALIAS), None) for position, record in enumerate(batch)])

    return ours


def ceiling_function(batch: list[dict[str, Any]]) -> Callable[[], bytes]:
    from boto3.dynamodb.types import Binary, TypeDeserializer

    deserializer = TypeDeserializer()
    shaped = [(common.to_boto3_shape(record["dynamodb"]["Keys"]), common.to_boto3_shape(record["dynamodb"]["NewImage"]))
              for record in batch]

    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        if isinstance(value, set):
            return sorted(value, key=lambda member: member.value if isinstance(member, Binary) else member)
        if isinstance(value, Binary):
            return base64.b64encode(value.value).decode("ascii")
        raise TypeError(f"cannot serialize {type(value).__name__}")

    def ceiling() -> bytes:
        lines = []
        for keys, image in shaped:
            doc_id = "|".join(str(deserializer.deserialize(keys[name])) for name in sorted(keys))
            document = {name: deserializer.deserialize(value) for name, value in image.items()}
            lines.append(json.dumps({"index": {"_index": INDEX, "_id": doc_id}}))
            lines.append(json.dumps(document, default=default))
        lines.append("")
        return "\n".join(lines).encode("utf-8")

    return ceiling


def walk_function(batch: list[dict[str, Any]]) -> Callable[[], list[Any]]:
    """For scale, not a competitor: the least any pure-Python converter does, a walk that only
    unwraps the type tags. No checks, no numbers, no sets, no ids, no JSON."""
    images = [record["dynamodb"]["NewImage"] for record in batch]

    def unwrap(value: dict[str, Any]) -> Any:
        [(tag, inner)] = value.items()
        if tag == "M":
            return {name: unwrap(item) for name, item in inner.items()}
        if tag == "L":
            return [unwrap(item) for item in inner]
        return inner

    def walk() -> list[Any]:
        return [{name: unwrap(value) for name, value in image.items()} for image in images]

    return walk


def documents(body: bytes) -> list[Any]:
    """The documents of a bulk body, numbers read exactly, bookkeeping left out."""
    lines = body.decode("utf-8").splitlines()
    found = []
    for line in lines[1::2]:
        document = json.loads(line, parse_float=Decimal, parse_int=Decimal)
        document.pop("_ddb", None)
        found.append(document)
    return found


def main() -> int:
    parser = common.parser(__doc__)
    parser.add_argument("--images", type=common.positive, default=10_000, help="images per run (default: 10000)")
    parser.add_argument("--runs", type=common.positive, default=9, help="measured runs per side (default: 9)")
    parser.add_argument("--profile", metavar="FILE",
                        help="also profile three runs of ours with pyinstrument and write the report to FILE")
    args = parser.parse_args()

    batch = records(args.images)
    functions = {"ours": ours_function(batch), "ceiling": ceiling_function(batch), "walk": walk_function(batch)}
    if documents(functions["ours"]()) != documents(functions["ceiling"]()):
        raise SystemExit("ours and the ceiling produce different documents")

    cpu: dict[str, list[float]] = {name: [] for name in functions}

    def timed(name: str) -> Callable[[], float]:
        def run() -> float:
            gc.collect()
            wall, process = time.perf_counter(), time.process_time()
            functions[name]()
            cpu[name].append(time.process_time() - process)
            return time.perf_counter() - wall

        return run

    def report(run: int, figures: dict[str, float]) -> None:
        print(f"run {run + 1:>2}: ours {args.images / figures['ours']:>9,.0f} images/s   "
              f"ceiling {args.images / figures['ceiling']:>9,.0f} images/s   "
              f"(tag-unwrapping walk {args.images / figures['walk']:>9,.0f} images/s)", flush=True)

    results = common.interleaved({name: timed(name) for name in functions}, args.runs, warmup=1, on_run=report)
    for name in cpu:
        del cpu[name][0]  # the warm-up round
    if args.profile:
        common.profile(timed("ours"), 3, args.profile)

    ours_rate = args.images / common.median(results["ours"])
    ceiling_rate = args.images / common.median(results["ceiling"])
    ratio = ours_rate / ceiling_rate
    ratio_cpu = common.median(cpu["ceiling"]) / common.median(cpu["ours"])
    walk_us = common.median(cpu["walk"]) / args.images * 1e6
    figures = {
        "benchmark": "convert",
        "images": args.images, "runs": args.runs,
        "ours_images_per_s": round(ours_rate), "ceiling_images_per_s": round(ceiling_rate),
        "ours_us_per_image": round(1e6 / ours_rate, 2), "ceiling_us_per_image": round(1e6 / ceiling_rate, 2),
        "ratio": round(ratio, 3), "ratio_cpu": round(ratio_cpu, 3),
        "ours_cpu_us_per_image": round(common.median(cpu["ours"]) / args.images * 1e6, 2),
        "ceiling_cpu_us_per_image": round(common.median(cpu["ceiling"]) / args.images * 1e6, 2),
        "walk_cpu_us_per_image": round(walk_us, 2),
        "goal": f">= {GOAL}x the ceiling", "goal_ratio": GOAL, "met": ratio >= GOAL,
        "noise": {"ours": common.spread(results["ours"]), "ceiling": common.spread(results["ceiling"])},
    }
    print(f"\nmedians of {args.runs} runs, {args.images} images (wall time; CPU-time ratio beside it):")
    print(f"  ceiling (TypeDeserializer + json.dumps): {ceiling_rate:>9,.0f} images/s  {figures['noise']['ceiling']}")
    print(f"  ours (change_of + bulk_body):            {ours_rate:>9,.0f} images/s  {figures['noise']['ours']}"
          f"  = {ratio:.2f}x the ceiling (CPU time: {ratio_cpu:.2f}x; goal >= {GOAL}x: "
          f"{'met' if figures['met'] else 'MISSED'})")
    print(f"  CPU per image: ours {figures['ours_cpu_us_per_image']} us, ceiling {figures['ceiling_cpu_us_per_image']} us;"
          f" a walk that only unwraps the type tags: {figures['walk_cpu_us_per_image']} us")
    common.write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
