"""What the benchmarks share: realistic stream records, the local Elasticsearch, timing helpers.

Benchmarks are scripts, not tests: they print medians and ratios and never assert timings.
Every figure is measured side by side with its ceiling (or floor) in the same run, interleaved,
so a machine that slows down during a run slows both sides alike.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "scripts")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

#: The Elasticsearch instance name every benchmark uses (``scripts/es_local.py``).
INSTANCE = "bench"
HEAP = "1g"
STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/Images/stream/2026-11-27T00:00:00.000"
#: 28 digits, like the sequence numbers in AWS's documented sample.
SEQUENCE_BASE = 4421584500000000017450439000

_WORDS = ("cat", "dog", "beach", "sunset", "family", "food", "city", "snow", "party", "forest", "car", "bird")


def image(n: int, padding: int = 0) -> dict[str, Any]:
    """A realistic 12-attribute item image as Lambda delivers it (binary as base64 text).

    About 720 bytes of compact DynamoDB JSON, 29 AttributeValues; ``padding`` characters of
    description make it larger. It holds every DynamoDB type (S, N, B, SS, NS, BS, BOOL, NULL,
    M, L), numbers as DynamoDB writes them in stream records (no trailing zeros, no exponent),
    some whole, some decimal, one the full 17 digits a client writing a double sends.
    """
    digest = hashlib.md5(str(n).encode()).digest()
    return {
        "pk": {"S": f"images/{n // 1000:04d}/{n:07d}.jpg"},
        "size": {"N": str(48_213 + n * 37)},
        "checksum": {"B": base64.b64encode(digest).decode()},
        "ratio": {"N": "1.7777777777777777" if n % 3 else "0.75"},
        "dims": {"NS": ["1920", "1080"] if n % 3 else ["1536", "2048"]},
        "tags": {"SS": sorted({_WORDS[n % 12], _WORDS[(n * 7) % 12], _WORDS[(n * 5 + 1) % 12]}, reverse=True)},
        "thumbnails": {"BS": [base64.b64encode(digest[:6]).decode(), base64.b64encode(digest[6:12]).decode()]},
        "public": {"BOOL": n % 2 == 0},
        "expiresAt": {"NULL": True} if n % 4 else {"N": str(1_800_000_000 + n)},
        "exif": {"M": {
            "camera": {"S": "FUJIFILM X100V"}, "iso": {"N": str(100 * (1 + n % 32))},
            "exposure": {"N": "0.004"}, "aperture": {"N": "2.8"},
            "gps": {"L": [{"N": "52.520008"}, {"N": "13.404954"}]},
            "flash": {"BOOL": False}, "lens": {"NULL": True},
        }},
        "history": {"L": [
            {"M": {"at": {"N": str(1_795_737_000 + n)}, "by": {"S": f"user-{n % 97}"}, "op": {"S": "upload"}}},
            {"M": {"at": {"N": str(1_795_737_060 + n)}, "by": {"S": "resizer"}, "op": {"S": "thumbnail"}}},
        ]},
        "description": {"S": f"Photo {n} from the {_WORDS[n % 12]} album" + "." * padding},
    }


def keys_of(n: int) -> dict[str, Any]:
    return {"pk": {"S": f"images/{n // 1000:04d}/{n:07d}.jpg"}}


def record(n: int, event_name: str, sequence: int, padding: int = 0) -> dict[str, Any]:
    """A stream record for item ``n`` in Lambda's shape (NEW_AND_OLD_IMAGES view)."""
    stream: dict[str, Any] = {
        "ApproximateCreationDateTime": 1795737074,
        "Keys": keys_of(n),
        "SequenceNumber": str(SEQUENCE_BASE + sequence),
        "SizeBytes": 800 + padding,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if event_name != "REMOVE":
        stream["NewImage"] = image(n, padding)
    if event_name != "INSERT":
        stream["OldImage"] = image(n + 1, padding)  # a different earlier state of the item
    return {
        "eventID": f"{sequence:032x}",
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": stream,
        "eventSourceARN": STREAM_ARN,
    }


def to_boto3_shape(image: dict[str, Any]) -> dict[str, Any]:
    """An item image with binary values as bytes, as boto3 (and ``TypeDeserializer``) expect.

    Lambda delivers binary as base64 text, which ``TypeDeserializer`` refuses (TypeError)."""
    return {name: _boto3_value(value) for name, value in image.items()}


def _boto3_value(value: dict[str, Any]) -> dict[str, Any]:
    ((tag, inner),) = value.items()
    if tag == "B":
        return {"B": base64.b64decode(inner)}
    if tag == "BS":
        return {"BS": [base64.b64decode(item) for item in inner]}
    if tag == "M":
        return {"M": to_boto3_shape(inner)}
    if tag == "L":
        return {"L": [_boto3_value(item) for item in inner]}
    return value


class LambdaContext:
    """The part of Lambda's context the handler reads: the time left, counting down."""

    def __init__(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self._deadline - time.monotonic()) * 1000), 0)


def importable(module: str) -> bool:
    """Whether ``module`` can be imported here (optional comparisons need their package)."""
    import importlib.util

    return importlib.util.find_spec(module) is not None


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    """The noise of a series, as the interquartile range relative to its median."""
    if len(values) < 4:
        return "n/a"
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f"±{(q3 - q1) / 2 / statistics.median(values) * 100:.0f}%"


def interleaved(sides: dict[str, Callable[[], float]], runs: int, warmup: int = 1,
                on_run: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, list[float]]:
    """Run each side ``runs`` times, alternating which goes first (ABBA), after ``warmup`` rounds.

    Each callable returns the seconds of its measured part."""
    names = list(sides)
    for _ in range(warmup):
        for name in names:
            sides[name]()
    results: dict[str, list[float]] = {name: [] for name in names}
    for run in range(runs):
        order = names if run % 2 == 0 else names[::-1]
        figures = {}
        for name in order:
            figures[name] = sides[name]()
            results[name].append(figures[name])
        if on_run is not None:
            on_run(run, figures)
    return results


def parser(doc: str | None) -> argparse.ArgumentParser:
    """The flags every benchmark takes: ``--runs``, ``--json`` and ``--es-url``."""
    first = (doc or "").strip().splitlines()[0]
    rest = "\n".join((doc or "").strip().splitlines()[1:])
    built = argparse.ArgumentParser(description=first, epilog=rest,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    built.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    return built


def add_es_flag(built: argparse.ArgumentParser) -> None:
    built.add_argument("--es-url", metavar="URL",
                       help=f"use this running Elasticsearch (default: start the local instance {INSTANCE!r})")


def add_walk_flag(built: argparse.ArgumentParser) -> None:
    built.add_argument("--python-walk", action="store_true",
                       help="convert images with the Python walk, not the C one (indexer/_walk.c): "
                            "the figure before it, or where it is not built")


def use_walk(args: argparse.Namespace) -> str:
    """Applies ``--python-walk``; the walk the run measures ("c" or "python")."""
    from indexer import convert

    if args.python_walk:
        convert._native = None
    return "python" if convert._native is None else "c"


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


@contextmanager
def elasticsearch(url: str | None) -> Iterator[str]:
    """The URL of an Elasticsearch to measure against: ``url``, or the local instance started
    (fresh) for this run and stopped after it."""
    if url:
        yield url.rstrip("/")
        return
    import es_local

    instance = es_local.start(name=INSTANCE, fresh=True, heap=HEAP)
    try:
        yield instance.url
    finally:
        es_local.stop(INSTANCE)


def profile(measured: Callable[[], float], runs: int, path: str) -> None:
    """Profile ``runs`` calls of ``measured`` with pyinstrument (``pip install pyinstrument``);
    write the call tree as text to ``path``."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    for _ in range(runs):
        profiler.start()
        measured()
        profiler.stop()
    Path(path).write_text(profiler.output_text(unicode=True, show_all=False))
    print(f"profile of {runs} runs written to {path}")


def write_json(path: str | None, figures: dict[str, Any]) -> None:
    """Save ``figures`` (with the time they were measured) when ``--json`` asked for it."""
    from datetime import datetime, timezone

    figures.setdefault("measured_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if path:
        Path(path).write_text(json.dumps(figures, indent=2) + "\n")


def quiet_environment(es_url: str) -> dict[str, str]:
    """Environment for a handler in this process or a child: the cluster, warnings only, and
    AWS pointed at a closed loopback port so nothing can leave the machine."""
    return {
        "ELASTICSEARCH_URL": es_url,
        "LOG_LEVEL": "WARNING",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "DLQ_URL": "http://127.0.0.1:9/123456789012/bench-dlq",
        "TARGETS_TTL_SECONDS": "3600",
    }


def child_environment(es_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(quiet_environment(es_url))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env
