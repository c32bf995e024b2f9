"""Progress for long work: a bar on a terminal, periodic structured log lines otherwise."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable

import structlog

log = structlog.get_logger("replay.progress")


class Progress:
    """Counts items and extra counters; thread-safe; draws a tqdm bar only on a TTY."""

    def __init__(
        self,
        what: str,
        total: int | None,
        unit: str = "items",
        enabled: bool = True,
        log_every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.total = total
        self._lock = threading.Lock()
        self._clock = clock
        self._started = clock()
        self._last_log = self._started
        self._log_every = log_every
        self.done = 0
        self.counters: dict[str, int] = {}
        self._bar: Any = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total or None, unit=f" {unit}", desc=what, file=sys.stderr, dynamic_ncols=True)

    def advance(self, items: int, **counters: int) -> None:
        with self._lock:
            self.done += items
            for name, value in counters.items():
                self.counters[name] = self.counters.get(name, 0) + value
            if self._bar is not None:
                self._bar.update(items)
                self._bar.set_postfix(self.counters, refresh=False)
                return
            now = self._clock()
            if now - self._last_log >= self._log_every:
                self._last_log = now
                log.info(
                    "progress", what=self.what, done=self.done, total=self.total,
                    rate=round(self.done / max(now - self._started, 1e-9), 1), **self.counters,
                )

    def elapsed(self) -> float:
        return self._clock() - self._started

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
