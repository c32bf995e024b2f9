"""The worker: load one unit of work into the index being built, within a time budget.

Every engine calls :meth:`Worker.run` — the local engine in each pool process, the Step Functions
engine in its worker Lambda. Items become documents through ``replay.full``'s snapshot write (the
same conversion and guard as the thread scan), so a unit run twice changes nothing: the second
run finds every document there and counts it as already newer.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

import structlog

from indexer.apply import RetryPolicy
from indexer.errors import ReplayAborted, SettingsError
from indexer.search import Store
from indexer.tablestate import TableReader

from . import export as exports
from . import table as tables
from .full import Written, scan_page_size, snapshot_changes, write_snapshots
from .transition import Transition
from .units import Done, ExportUnit, ScanUnit, Unit, unit_from_wire, unit_to_wire

log = structlog.get_logger("replay.worker")

#: Test hook: the path of a file a scan unit waits for after each written bulk, until it exists.
HOLD_VARIABLE = "REPLAY_HOLD_FILE"
#: Young collections while a unit loads: after this many more allocations than frees, not 700.
YOUNG_COLLECTION_THRESHOLD = 50_000


@contextmanager
def collections_spaced(threshold: int = YOUNG_COLLECTION_THRESHOLD) -> Iterator[None]:
    """The cyclic collector's young collections made rarer for the block, as they were after.

    A bulk's items (about 60 containers each) live until it is written, so a young collection
    every 700 allocations walks them again and again and frees nothing: a fifth of the worker's
    CPU per item (bench/export_bench.py). Rarer, not off: each bulk request leaves a few
    hundred objects in reference cycles, which a unit of millions of items must still free."""
    before = gc.get_threshold()
    if before[0]:  # 0: someone turned collections off; left so
        gc.set_threshold(max(threshold, before[0]), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


@dataclass(frozen=True)
class Target:
    """Where a worker writes and how: plain data, so it crosses process and Lambda boundaries."""

    index: str
    alias: str
    table: tables.TableInfo
    bulk_size: int = 1000
    bulk_bytes: int = 5 * 1024 * 1024
    #: Items per second this worker may read from the table (a scan unit), None for no limit.
    rate: float | None = None
    #: The index's scan start S (ms), when the engine knows it: snapshots then replace the
    #: documents written while live writers switched (replay/transition.py). Without it (the
    #: Step Functions worker, whose role may only POST) finish's sweep replaces them.
    started_ms: int | None = None


class SharedBackoff:
    """A pause every worker honours: when one is told to back off (429, 503...), all slow down
    together instead of each hammering the cluster on its own schedule. Backed by one shared
    double, so it works across the local engine's processes."""

    def __init__(self, until: Any = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.until = until if until is not None else multiprocessing.Value("d", 0.0)
        self._clock = clock
        self._sleep = sleep

    def backoff(self, seconds: float) -> None:
        """The retry's wait, published to every worker, then waited out here."""
        with self.until.get_lock():
            self.until.value = max(self.until.value, self._clock() + seconds)
        log.info("shared_backoff", seconds=round(seconds, 2))
        self.wait()

    def wait(self) -> None:
        """Wait until no worker's backoff is pending."""
        while True:
            left = self.until.value - self._clock()
            if left <= 0:
                return
            self._sleep(left)


class Worker:
    """Loads units into ``target.index``; ``report(read, created, stale)`` after every bulk."""

    def __init__(self, target: Target, store: Store, dynamodb: Any, s3: Any, policy: RetryPolicy,
                 backoff: SharedBackoff | None = None,
                 report: Callable[[int, int, int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.target, self.store, self.dynamodb, self.s3, self.policy = target, store, dynamodb, s3, policy
        self.backoff = backoff or SharedBackoff()
        self.report = report or (lambda read, created, stale: None)
        self.clock = clock
        self.stop = threading.Event()
        #: Consistent reads of items whose transition document the scan read too close to.
        self.reader = TableReader(client_factory=lambda region: self.dynamodb)

    def run(self, unit: Unit, budget: float | None = None) -> Done:
        """Load ``unit`` until it is finished or ``budget`` seconds have passed (then ``continuation``
        says where to resume). Raises ReplayAborted / ExportError when the unit cannot be loaded."""
        started = self.clock()
        out_of_time = (lambda: False) if budget is None else (lambda: self.clock() - started >= budget)
        if isinstance(unit, ScanUnit):
            batches = self._scan_batches(unit)
        else:
            batches = self._export_batches(unit)
        done = Done()
        from botocore.exceptions import BotoCoreError, ClientError

        # One bulk in flight while the next batch is read and converted: the cluster indexes
        # while this process parses, so neither waits for the other (bench/export_bench.py).
        # Never more than one: the unit's continuation is the end of the last bulk written.
        with collections_spaced(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="unit-write") as writer:
            flight: _InFlight | None = None
            try:
                for items, resume, read_ms in batches:
                    prepared = self._prepared(items, read_ms)
                    if flight is not None:
                        self._landed(flight, done, unit)
                        if flight.resume is not None and out_of_time():
                            done.continuation = flight.resume
                            flight = None
                            break
                    flight = _InFlight(writer.submit(self._write, prepared), len(items), resume, prepared.refused)
            except (BotoCoreError, ClientError) as exc:
                # Leaving the pool waits for the write in flight; its outcome no longer matters:
                # the unit, run again, changes nothing it wrote.
                raise ReplayAborted(f"{unit.kind} unit {_where(unit)}: AWS failed: {exc}") from None
            if flight is not None:
                self._landed(flight, done, unit)
                if flight.resume is not None and out_of_time():
                    done.continuation = flight.resume
        log.info("unit_done", kind=unit.kind, read=done.read, created=done.created, stale=done.stale,
                 refused=len(done.refused), seconds=round(self.clock() - started, 2),
                 continued=done.continuation is not None)
        return done

    def _prepared(self, items: list[dict[str, Any]], read_ms: int | None) -> "_Prepared":
        """A batch converted, ready to write."""
        t = self.target
        changes, refused = snapshot_changes(t.alias, t.table, items)
        return _Prepared(changes, refused, self._transition(items, read_ms))

    def _write(self, prepared: "_Prepared") -> Written:
        t = self.target
        self.backoff.wait()
        return write_snapshots(self.store, t.index, prepared.changes, self.policy, t.bulk_bytes,
                               sleep=self.backoff.backoff, transition=prepared.transition)

    def _landed(self, flight: "_InFlight", done: Done, unit: Unit) -> None:
        """Count a bulk once it is written (raises what stopped it: ReplayAborted)."""
        written = flight.future.result()
        done.read += flight.items
        done.created += written.created
        done.stale += written.stale
        done.replaced += written.replaced
        done.read_again += written.read_again
        done.refused += flight.refused + written.refused
        self.report(flight.items, written.created, written.stale)
        if isinstance(unit, ScanUnit) and flight.resume is not None:
            self._hold_for_tests(done)

    def _transition(self, items: list[dict[str, Any]], read_ms: int | None) -> Transition | None:
        """What the bulk needs to replace documents written while live writers switched to the
        index; ``read_ms``: when the items were read (None: an export, as of the scan start)."""
        t = self.target
        if t.started_ms is None:
            return None
        return Transition(t.alias, t.table, items, t.started_ms if read_ms is None else read_ms,
                          t.started_ms, self.reader)

    def _hold_for_tests(self, done: Done) -> None:
        """With REPLAY_HOLD_FILE set, a scan unit waits after each written bulk until that file
        exists: tests interrupt a replay that is provably mid-scan, never racing the scan."""
        hold = os.environ.get(HOLD_VARIABLE)
        if not hold or os.path.exists(hold):
            return
        log.warning("replay_holding", file=hold, written=done.created)
        while not os.path.exists(hold) and not self.stop.wait(0.05):
            pass

    def _scan_batches(self, unit: ScanUnit) -> Iterator[tuple[list[dict[str, Any]], Unit | None, int | None]]:
        """Bulks of scanned items, each with the unit resumed after it (None after the last) and
        when its first page was asked for (ms): every item of the bulk was read after that."""
        t = self.target
        limiter = tables.RateLimiter(t.rate)
        # One unit at a time per worker: a page is about one second of this worker's rate share.
        pages = tables.scan_pages(self.dynamodb, t.table.name, unit.segment, unit.segments,
                                  scan_page_size(t.bulk_size, t.rate, 1), limiter, self.stop, unit.start_key)
        pending: list[dict[str, Any]] = []
        asked: int | None = None
        while True:
            # Taken before the Scan request: what the page holds is at least this recent.
            now = int(time.time() * 1000)
            page = next(pages, None)
            if page is None:
                break
            items, last = page
            asked = now if asked is None else asked
            pending += items
            if last is None:
                break
            if len(pending) >= t.bulk_size:
                yield pending, unit.resumed(last), asked
                pending, asked = [], None
        if self.stop.is_set():
            raise KeyboardInterrupt
        yield pending, None, asked

    def _export_batches(self, unit: ExportUnit) -> Iterator[tuple[list[dict[str, Any]], Unit | None, int | None]]:
        body = exports.get(self.s3, unit.bucket, unit.key)
        position = unit.skip
        for batch in _batched(_skip(exports.items_of(body, unit), unit.skip), self.target.bulk_size):
            position += len(batch)
            yield batch, (unit.resumed(position) if position < unit.item_count else None), None


@dataclass(frozen=True)
class _Prepared:
    """One batch of items as snapshot writes, and what could not become one."""

    changes: list
    refused: list[tuple[str, str]]
    transition: Transition | None


@dataclass(frozen=True)
class _InFlight:
    """The bulk being written, and what to count and resume from once it is."""

    future: "Future[Written]"
    items: int
    resume: Unit | None
    refused: list[tuple[str, str]]


def _where(unit: Unit) -> str:
    if isinstance(unit, ScanUnit):
        return f"segment {unit.segment}/{unit.segments}"
    return f"s3://{unit.bucket}/{unit.key}"


def _skip(items: Iterator[dict[str, Any]], count: int) -> Iterator[dict[str, Any]]:
    for _ in range(count):
        next(items, None)
    return items


def _batched(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- the Step Functions engine's worker Lambda -------------------------------------------------

#: Seconds of an invocation kept back for the last bulk and the answer (Lambda stops at 15 min).
LAMBDA_MARGIN_SECONDS = 60.0
_lambda_workers: dict[str, Worker] = {}


def target_of(build: Mapping[str, Any]) -> Target:
    """The build's target, from the JSON the state machine carries (``prepare`` writes it)."""
    try:
        table = build["table"]
        info = tables.TableInfo(str(table["name"]), tuple(table["key_names"]), dict(table["key_types"]), None, None,
                                int(table.get("item_count", 0)))
        return Target(str(build["index"]), str(build["alias"]), info, int(build.get("bulk_size", 1000)),
                      int(build.get("bulk_bytes", 5 * 1024 * 1024)))
    except (KeyError, TypeError, ValueError) as exc:
        raise SettingsError(f"malformed build in the state machine's input ({type(exc).__name__}: {exc})") from None


def iteration(event: Mapping[str, Any], done: Done) -> dict[str, Any]:
    """The next iteration's input: the continuation (None when the unit is finished), the same
    build, and the unit's totals so far — the Map's output per unit when it ends."""
    totals = dict(event.get("totals") or {})
    for name, value in (("read", done.read), ("created", done.created), ("stale", done.stale),
                        ("refused", len(done.refused)), ("replaced", done.replaced), ("read_again", done.read_again)):
        totals[name] = int(totals.get(name, 0)) + value
    return {"unit": unit_to_wire(done.continuation) if done.continuation else None,
            "build": event["build"], "totals": totals}


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """LoadUnit: load one slice of ``event["unit"]`` within this invocation's time."""
    from indexer.backends import store_for
    from indexer.settings import Settings

    from .sources import s3_client

    unit = unit_from_wire(event.get("unit"))
    target = target_of(event.get("build") or {})
    worker = _lambda_workers.get(target.index)
    if worker is None:
        settings = Settings.from_env()
        worker = Worker(target, store_for(settings), tables.client(), s3_client(),
                        RetryPolicy(max_attempts=settings.retry_max_attempts, request_timeout=settings.request_timeout))
        _lambda_workers.clear()
        _lambda_workers[target.index] = worker
    budget = max(context.get_remaining_time_in_millis() / 1000.0 - LAMBDA_MARGIN_SECONDS, 1.0)
    done = worker.run(unit, budget)
    for key, reason in done.refused[:100]:
        log.warning("item_not_indexed", key=key, reason=reason[:500])
    return iteration(event, done)
