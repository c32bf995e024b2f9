"""Applies changes through the ordering guard, retrying what is transient within a time budget.

Every change ends in exactly one of: applied, stale (the index already holds it or newer),
dead (the cluster refuses the document itself: dead-letter it) or unresolved (time ran out,
the cluster is down or refuses us: the caller reports it to Lambda for redelivery).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import structlog
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
    wait_random,
)

from .actions import (Current, Outcome, Write, bulk_body, in_snapshot_window, is_stale, item_results, needs_table_state,
                      older_than_snapshot, stale_against_snapshot)
from .errors import ClusterError, IndexerError, MissingIndex, ReadbackFailed, RecordError, RetryableError
from .layout import FixedTargets, Targets
from .metrics import BatchMetrics
from .records import Change
from .search import Store
from .settings import DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_MAX_ATTEMPTS, Settings
from .written import WrittenCache

#: Reads the table's present state for changes the snapshot rule cannot judge by time: (alias,
#: document id) → the change to write instead, or why there is none; raises ReadbackFailed.
#: Given the changes and the seconds left (indexer/tablestate.py).
ReadBack = Callable[[list[Change], Callable[[], float]], dict[tuple[str, str], "Change | RecordError"]]

log = structlog.get_logger("indexer.apply")

#: Bulk requests are cut at this many bytes (Elasticsearch accepts 100 MB; smaller is gentler).
BULK_MAX_BYTES = 5 * 1024 * 1024
#: Reads-and-writes in a row for documents that keep changing under us before backing off.
CONFLICT_ROUNDS = 5


@dataclass
class Deadline:
    """The time this invocation may still spend; derived from Lambda's remaining time."""

    expires_at: float
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> "Deadline":
        return cls(clock() + seconds, clock)

    def remaining(self) -> float:
        return self.expires_at - self.clock()


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = DEFAULT_RETRY_MAX_ATTEMPTS
    initial_wait: float = 0.2
    max_wait: float = 5.0
    jitter: float = 0.5
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT

    @classmethod
    def of(cls, settings: Settings) -> "RetryPolicy":
        """The policy ``RETRY_MAX_ATTEMPTS`` and ``ELASTICSEARCH_TIMEOUT`` ask for."""
        return cls(max_attempts=settings.retry_max_attempts, request_timeout=settings.request_timeout)


@dataclass
class Result:
    applied: list[Change] = field(default_factory=list)
    stale: list[Change] = field(default_factory=list)
    dead: list[tuple[Change, RecordError]] = field(default_factory=list)
    unresolved: list[Change] = field(default_factory=list)
    #: Why the unresolved ones were given up, for the summary log.
    last_error: str = ""


@dataclass(slots=True)
class _Unit(Write):
    """One change for one target index: a write once ``current`` is decided. Carries its
    outcome key, built once rather than at every look-up (CPU per record, bench/cpu_bench.py)."""

    key: tuple[str, str, str] = ("", "", "")


def _unit(index: str, change: Change) -> _Unit:
    return _Unit(index, change, None, (index, change.alias, change.doc_id))


def _chunks(writes: list[_Unit], max_bytes: int) -> list[list[_Unit]]:
    chunks: list[list[_Unit]] = [[]]
    size = 0
    for write in writes:
        cost = len(write.change.source) + 200
        if chunks[-1] and size + cost > max_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(write)
        size += cost
    return [chunk for chunk in chunks if chunk]


class _Round:
    """The state of one ``apply`` call, carried across retry attempts."""

    def __init__(self, store: Store, deadline: Deadline, policy: RetryPolicy, max_bytes: int,
                 metrics: BatchMetrics, written: WrittenCache | None = None,
                 read_back: ReadBack | None = None, ahead: "ReadAhead | None" = None) -> None:
        self.metrics = metrics
        self.read_back = read_back
        #: Why the table could not be read for some units (they stay unsettled: Lambda retries).
        self.unread = ""
        #: The first read, started before the changes were converted; used up by the first attempt.
        self.ahead = ahead
        self.store = store
        #: What this container wrote last; its entries stand in for the read (see written.py).
        self.written = written if written is not None else WrittenCache(capacity=0)
        self.deadline = deadline
        self.policy = policy
        self.max_bytes = max_bytes
        self.pending: list[_Unit] = []
        self.outcomes: dict[tuple[str, str, str], str] = {}
        self.dead: dict[tuple[str, str], RecordError] = {}
        #: Fresh (INSERT) units whose blind ``create`` was sent: from then on they read first.
        self.tried_blind: set[tuple[str, str, str]] = set()
        #: Index → when the scan that built it started (ms), for the snapshot rule.
        self.snapshots: dict[str, int] = {}

    def timeout(self) -> float:
        remaining = self.deadline.remaining()
        if remaining <= 0.2:
            raise RetryableError("out of time for this invocation")
        return min(self.policy.request_timeout, remaining)

    def attempt(self) -> None:
        """Read, decide and write every pending unit; conflicts are re-read straight away."""
        for _ in range(CONFLICT_ROUNDS):
            # A bulk cut short by a transient error may have settled part of what is pending.
            self.pending = [unit for unit in self.pending if unit.key not in self.outcomes]
            if not self.pending:
                return
            # A snapshot (scanned item) loses to anything already there, so it needs no read:
            # a plain ``create`` is the whole guard, and its conflict means "stale". An INSERT's
            # document usually does not exist yet either: its first try is a ``create`` too (the
            # guard's own decision for an absent document), and only a conflict makes it read.
            # A document this container wrote last needs no read either: its entry is the
            # revision to write over, and a 409 (someone wrote since) drops it and reads.
            current, to_read = self.plan()
            if to_read:
                if self.ahead is not None:
                    # Read while the batch was being converted (see ReadAhead); read only the rest.
                    early = self.ahead.result()
                    self.ahead = None
                    current.update((pair, early[pair]) for pair in to_read if pair in early)
                    to_read = [pair for pair in to_read if pair not in early]
                if to_read:
                    current.update(self.store.current(to_read, self.timeout()))
                if self.read_back is not None:
                    self._table_states(current)
            writes: list[_Unit] = []
            for unit in self.pending:
                found = current.get((unit.index, unit.change.doc_id))
                if is_stale(unit.change, found) or (
                    not self._blind(unit)
                    and stale_against_snapshot(unit.change, found, self.snapshots.get(unit.index))
                ):
                    self._settle(unit, "stale")
                else:
                    unit.current = found
                    writes.append(unit)
            self.tried_blind.update(unit.key for unit in self.pending if unit.change.fresh)
            conflicts, retries = self._write(writes)
            self.pending = conflicts + retries
            if retries:
                raise RetryableError(f"{len(retries)} writes hit transient errors")
        if self.pending:
            raise RetryableError(f"{len(self.pending)} documents kept changing while being written")

    def target(self, changes: list[Change], targets: Targets | FixedTargets) -> dict[str, list[str]]:
        """Make ``changes`` pending, one unit per target index of their alias (alias → indices)."""
        indices: dict[str, list[str]] = {}
        for alias in {change.alias for change in changes}:
            indices[alias] = targets.indices(alias, self.timeout())
            self.snapshots.update(targets.snapshots(alias))
        self.pending = [_unit(index, change) for change in changes for index in indices[change.alias]]
        return indices

    def plan(self) -> tuple[dict[tuple[str, str], Current | None], list[tuple[str, str]]]:
        """What the pending units' documents hold as far as known without reading (this
        container's own last writes), and the (index, id) pairs that must be read first."""
        current: dict[tuple[str, str], Current | None] = {}
        to_read: list[tuple[str, str]] = []
        for unit in self.pending:
            if not unit.change.snapshot:
                known = self.written.usable(unit.index, unit.change.doc_id, unit.change.sequence)
                if known is not None:
                    current[(unit.index, unit.change.doc_id)] = known
                    continue
            if not self._blind(unit):
                to_read.append((unit.index, unit.change.doc_id))
        return current, to_read

    def _write(self, writes: list[_Unit]) -> tuple[list[_Unit], list[_Unit]]:
        conflicts: list[_Unit] = []
        retries: list[_Unit] = []
        for chunk in _chunks(writes, self.max_bytes):
            body = bulk_body(chunk)
            sent = self.metrics.bulk_sent()
            response = self.store.bulk(body, self.timeout())
            answered = self.metrics.bulk_answered(sent, len(body))
            for write, result in zip(chunk, item_results(response, len(chunk))):
                unit = write
                if result.outcome is not Outcome.PERMANENT:
                    # Whatever else came back, the document may not be what the entry says.
                    self.written.forget(write.index, write.change.doc_id)
                if result.outcome is Outcome.APPLIED:
                    self._settle(unit, "applied")
                    self.metrics.acknowledged(write.change.alias, write.change.doc_id, answered)
                    if result.seq_no >= 0:
                        # The entry stands in for a read of this document: whatever the guard
                        # reads of a document (is_stale, actions.current_of) must be in it.
                        self.written.wrote(write.index, write.change.doc_id, Current(
                            write.change.sequence, result.seq_no, result.primary_term, write.change.read, write.change.at))
                elif result.outcome is Outcome.CONFLICT:
                    self.metrics.version_conflicts += 1
                    if write.change.snapshot:
                        self._settle(unit, "stale")
                    else:
                        conflicts.append(unit)
                elif result.outcome is Outcome.PERMANENT:
                    self._settle(unit, "dead")
                    self.dead[(write.change.alias, write.change.doc_id)] = RecordError(
                        result.error_type, f"{write.index}: {result.reason}"[:2000]
                    )
                elif result.outcome is Outcome.MISSING_INDEX:
                    raise MissingIndex(f"index {write.index!r} disappeared: {result.reason}")
                else:
                    retries.append(unit)
        return conflicts, retries

    def _table_states(self, current: dict[tuple[str, str], Current | None]) -> None:
        """Put the table's present state in place of each pending change the snapshot rule
        cannot judge by time (tablestate.py). Units whose read failed leave ``pending``
        unsettled, so the caller reports them to Lambda: never applied as they were."""
        units = [unit for unit in self.pending if needs_table_state(
            unit.change, current.get((unit.index, unit.change.doc_id)), self.snapshots.get(unit.index))]
        if not units or self.read_back is None:
            return
        changes = list({(unit.change.alias, unit.change.doc_id): unit.change for unit in units}.values())
        try:
            states = self.read_back(changes, self.deadline.remaining)
        except ReadbackFailed as exc:
            self.unread = str(exc)
            log.warning("table_read_failed", count=len(changes), error=str(exc)[:500])
            unread = {unit.key for unit in units}
            self.pending = [unit for unit in self.pending if unit.key not in unread]
            return
        for unit in units:
            state = states[(unit.change.alias, unit.change.doc_id)]
            if isinstance(state, RecordError):
                self._settle(unit, "dead")
                self.dead[(unit.change.alias, unit.change.doc_id)] = state
            else:
                unit.change = state
        self.pending = [unit for unit in self.pending if unit.key not in self.outcomes]

    def _blind(self, unit: _Unit) -> bool:
        """Whether this unit is written without reading what the index holds first (never a
        record older than the index's snapshot or in its uncertain window: a missing document
        may mean it is stale, or that the table must be read)."""
        if unit.change.snapshot:
            return True
        started = self.snapshots.get(unit.index)
        if older_than_snapshot(unit.change, started) or in_snapshot_window(unit.change, started):
            return False
        return unit.change.fresh and unit.key not in self.tried_blind

    def _settle(self, unit: _Unit, label: str) -> None:
        self.outcomes[unit.key] = label


class ReadAhead:
    """The guard's first ``mget``, on a thread of its own while the batch's images convert.

    Which documents the guard reads depends only on the records' envelopes (ids, sequences,
    event names), not on their images, and converting a cold batch's images takes about as
    long as the read's round trip: doing both at once hides most of the read
    (bench/handler_bench.py). Reading earlier is as safe as reading later: every write is
    conditional on exactly the revision read, so a document written in between makes the write
    a conflict, which reads again and decides again. A read that fails is left to the guard,
    which reads those documents itself and meets the error with its retries."""

    def __init__(self, store: Store, pairs: list[tuple[str, str]], timeout: float) -> None:
        self._found: dict[tuple[str, str], Current | None] = {}
        self._thread = threading.Thread(target=self._read, args=(store, pairs, timeout),
                                        name="read-ahead", daemon=True)
        self._thread.start()

    def _read(self, store: Store, pairs: list[tuple[str, str]], timeout: float) -> None:
        try:
            self._found = store.current(pairs, timeout)
        except IndexerError as exc:
            log.info("read_ahead_failed", error=str(exc)[:300])

    def result(self) -> dict[tuple[str, str], Current | None]:
        """What the read found ((index, id) → revision or None); empty when it failed."""
        self._thread.join()
        return self._found


def read_ahead(
    changes: list[Change],
    store: Store,
    targets: Targets | FixedTargets,
    deadline: Deadline,
    written: WrittenCache | None = None,
) -> ReadAhead | None:
    """Start the read :func:`apply` would begin ``changes`` with (their sources may still be
    empty: see ``records.unconverted``), or None when it would read nothing. Decided by the
    guard's own rules (``_Round.plan``), so it reads what the guard would read."""
    state = _Round(store, deadline, RetryPolicy(), BULK_MAX_BYTES, BatchMetrics(), written)
    try:
        state.target(changes, targets)
        _, pairs = state.plan()
        return ReadAhead(store, pairs, state.timeout()) if pairs else None
    except IndexerError:  # the targets could not be looked up: apply does it again, with retries
        return None


def apply(
    changes: list[Change],
    store: Store,
    targets: Targets | FixedTargets,
    deadline: Deadline,
    policy: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
    max_bytes: int = BULK_MAX_BYTES,
    metrics: BatchMetrics | None = None,
    written: WrittenCache | None = None,
    read_back: ReadBack | None = None,
    ahead: "ReadAhead | None" = None,
) -> Result:
    """Apply ``changes`` (at most one per document) to every target index of their aliases;
    ``written``, when given, is this container's cache of what it wrote (see written.py);
    ``read_back``, when given, reads the table for records of a rebuild's uncertain window;
    ``ahead``, the guard's first read already under way (see :func:`read_ahead`)."""
    result = Result()
    if not changes:
        return result
    state = _Round(store, deadline, policy, max_bytes, metrics or BatchMetrics(), written, read_back, ahead)
    retrying = Retrying(
        retry=retry_if_exception_type(RetryableError),
        stop=stop_after_attempt(policy.max_attempts)
        | stop_before_delay(max(deadline.remaining() - 0.5, 0.0)),
        wait=wait_exponential(multiplier=policy.initial_wait, max=policy.max_wait) + wait_random(0, policy.jitter),
        sleep=sleep,
        before_sleep=lambda rs: log.warning(
            "retrying", attempt=rs.attempt_number, error=str(rs.outcome.exception()) if rs.outcome else ""
        ),
    )
    indices: dict[str, list[str]] = {}
    try:
        for attempt in retrying:
            with attempt:
                if not indices:
                    # Resolved inside the retry loop: the lookup itself can hit a transient error.
                    indices.update(state.target(changes, targets))
                state.attempt()
    except RetryError as exc:
        error = exc.last_attempt.exception()
        result.last_error = f"{type(error).__name__}: {error}"
    except MissingIndex as exc:
        # An index was deleted or swapped away under us: give the rest back to Lambda, whose
        # redelivery looks the targets up afresh, rather than retrying a write that can't land.
        # A same-named index created later must not inherit this one's entries.
        targets.invalidate()
        state.written.forget_index()
        result.last_error = str(exc)
        log.warning("target_index_missing", error=str(exc))
    except ClusterError as exc:
        result.last_error = str(exc)
        log.error("cluster_error", error=str(exc))

    if state.unread and not result.last_error:
        result.last_error = f"ReadbackFailed: {state.unread}"
    for change in changes:
        labels = [
            state.outcomes.get((index, change.alias, change.doc_id))
            for index in indices.get(change.alias, [None])  # type: ignore[list-item]
        ]
        dead = state.dead.get((change.alias, change.doc_id))
        if dead is not None:
            result.dead.append((change, dead))
        elif any(label is None for label in labels):
            result.unresolved.append(change)
        elif all(label == "stale" for label in labels):
            result.stale.append(change)
        else:
            result.applied.append(change)
    return result
