"""Local sync's live view of the handler's metrics: every few seconds, one line on the terminal
with what CloudWatch would graph (records by outcome, replication lag, bulk requests).

The handler hands each invocation's figures to :data:`indexer.handler.listeners`; a
:class:`LiveFigures` sums them over a window and :func:`figures_line` (pure) says them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

from ..metrics import Value

#: Metrics that add up over a window.
_SUMMED = ("RecordsReceived", "RecordsIndexed", "RecordsDeleted", "RecordsStale", "RecordsDeadLettered",
           "RecordsFailed", "VersionConflicts", "BulkRequests", "BulkBytes")


@dataclass
class Window:
    """The figures of the invocations since the last line."""

    invocations: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    #: The largest batch ReplicationLag and OldestRecordAge seen (ms); None: nothing measured.
    lag_ms: float | None = None
    oldest_ms: float | None = None
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, figures: Mapping[str, Value]) -> None:
        self.invocations += 1
        for name in _SUMMED:
            value = figures.get(name, 0)
            self.sums[name] = self.sums.get(name, 0) + (value if isinstance(value, (int, float)) else 0)
        self.lag_ms = _larger(self.lag_ms, figures.get("ReplicationLag"))
        self.oldest_ms = _larger(self.oldest_ms, figures.get("OldestRecordAge"))
        latency = figures.get("BulkLatency")
        if latency is not None:
            self.latencies_ms.extend(latency if isinstance(latency, list) else [latency])


def _larger(current: float | None, value: Value | None) -> float | None:
    if not isinstance(value, (int, float)):
        return current
    return value if current is None else max(current, value)


def _duration(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def figures_line(window: Window, seconds: float) -> str:
    """One line for the terminal: what the last ``seconds`` delivered and how late."""
    if not window.invocations:
        return f"metrics, last {seconds:.0f} s: no records"
    s = {name: int(window.sums.get(name, 0)) for name in _SUMMED}
    rate = s["RecordsReceived"] / seconds if seconds > 0 else 0.0
    parts = [
        f"metrics, last {seconds:.0f} s: {s['RecordsReceived']} records ({rate:.0f}/s) in {window.invocations} "
        f"invocations: {s['RecordsIndexed']} indexed, {s['RecordsDeleted']} deleted, {s['RecordsStale']} stale, "
        f"{s['RecordsDeadLettered']} dead-lettered, {s['RecordsFailed']} failed",
    ]
    if window.lag_ms is not None:
        parts.append(f"replication lag max {_duration(window.lag_ms)}")
    if window.oldest_ms is not None:
        parts.append(f"oldest record at batch start {_duration(window.oldest_ms)}")
    if s["BulkRequests"]:
        ordered = sorted(window.latencies_ms)
        median = ordered[len(ordered) // 2] if ordered else 0.0
        parts.append(f"bulk {s['BulkRequests']} requests, {s['BulkBytes'] / 1024:.0f} KiB, latency p50 "
                     f"{_duration(median)} max {_duration(ordered[-1] if ordered else 0.0)}, "
                     f"version conflicts {s['VersionConflicts']}")
    return " | ".join(parts)


class LiveFigures:
    """Collects the handler's figures; :meth:`tick` writes a line once ``every`` seconds passed."""

    def __init__(self, every: float, write: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.write = write
        self.clock = clock
        self.window = Window()
        self.since = clock()

    def add(self, figures: Mapping[str, Value]) -> None:
        self.window.add(figures)

    def tick(self, force: bool = False) -> None:
        elapsed = self.clock() - self.since
        if elapsed >= self.every or (force and self.window.invocations):
            self.write(figures_line(self.window, elapsed))
            self.window = Window()
            self.since = self.clock()
