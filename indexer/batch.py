"""One batch of stream records, end to end: parse, collapse, apply, dead-letter, report.

Every record ends in exactly one place: applied (indexed or deleted), stale, dead-lettered, or
reported to Lambda in ``batchItemFailures`` — never acknowledged otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import structlog

from . import deadletter
from .apply import Deadline, ReadBack, RetryPolicy, apply, read_ahead
from .errors import DeadLetterError, RecordError
from .layout import Targets
from .metrics import BatchMetrics, batch_alias, created_ms
from .records import Head, head_of, newest_converted, newest_first, records_of, unconverted
from .search import Store
from .tablestate import TableReader, read_back
from .written import WrittenCache

log = structlog.get_logger("indexer.batch")


@dataclass
class Summary:
    records: int = 0
    indexed: int = 0
    deleted: int = 0
    stale: int = 0
    superseded: int = 0
    dead_lettered: int = 0
    failed: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    error: str = ""
    #: What the batch did to the cluster (requests, bytes, latency, conflicts, lag).
    metrics: BatchMetrics = field(default_factory=BatchMetrics)
    #: The alias the batch wrote to (a metric dimension).
    alias: str = ""

    def response(self) -> dict[str, Any]:
        return {"batchItemFailures": self.failures}

    def counts(self) -> dict[str, int]:
        return {
            "records": self.records,
            "indexed": self.indexed,
            "deleted": self.deleted,
            "stale": self.stale,
            "superseded": self.superseded,
            "dead_lettered": self.dead_lettered,
            "failed": self.failed,
        }


@dataclass
class Pipeline:
    """The adapters one batch needs; built once per warm Lambda container."""

    store: Store
    targets: Targets
    dead_letters: Any  # deadletter.SqsDeadLetters or anything with send(list[str]) -> list[int]
    default_alias: str | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], Any] = deadletter.now
    #: What this container wrote last, so changes to hot items skip the read (see written.py).
    written: WrittenCache = field(default_factory=WrittenCache)
    #: Reads items from the table for records around a rebuild's scan start (tablestate.py);
    #: None: such records are applied as they are (the snapshot rule's margin stays open).
    table_reader: TableReader | None = None

    def run(self, event: Any, deadline: Deadline, metrics: BatchMetrics | None = None) -> Summary:
        summary = Summary(metrics=metrics or BatchMetrics(), alias=self.default_alias or "unknown")
        try:
            records = records_of(event)
        except RecordError as error:
            # Not a batch at all: keep the whole event, there is nothing else to keep.
            self._dead_letter_or_raise([deadletter.Letter(event, error)])
            summary.dead_lettered = 1
            log.warning("event_dead_lettered", reason=error.message)
            return summary
        summary.records = len(records)
        summary.alias = batch_alias(records, self.default_alias)

        heads: list[Head] = []
        letters: dict[int, deadletter.Letter] = {}
        # Each record's creation time (epoch ms) for the lag metrics, read once with its head.
        created: list[float | None] = [None] * len(records)
        for position, record in enumerate(records):
            try:
                head = head_of(record, position, self.default_alias)
            except RecordError as error:
                letters[position] = deadletter.Letter(record, error)
                created[position] = created_ms(record)
                continue
            heads.append(head)
            if head.at is not None and head.at > 0:
                created[position] = head.at
        summary.metrics.observe_created(created)

        groups = newest_first(heads)
        # The guard's read needs only ids and sequences: it runs while the images convert.
        ahead = read_ahead([unconverted(same[0]) for same in groups], self.store, self.targets,
                           deadline, self.written)
        latest, unconvertible, summary.superseded = newest_converted(groups)
        for position, error in unconvertible.items():
            letters[position] = deadletter.Letter(records[position], error)
        result = apply(latest, self.store, self.targets, deadline, self.policy, self.sleep,
                       metrics=summary.metrics, written=self.written, read_back=self._read_back(records),
                       ahead=ahead)
        summary.metrics.observe_applied_at(created, result.applied)
        summary.stale = len(result.stale)
        for change in result.applied:
            if change.delete:
                summary.deleted += 1
            else:
                summary.indexed += 1
        for change, error in result.dead:
            letters[change.position] = deadletter.Letter(
                records[change.position], error, doc_id=change.doc_id, alias=change.alias
            )
        failed = {position for change in result.unresolved for position in change.covers}
        if result.unresolved:
            summary.error = result.last_error
            log.warning(
                "records_not_indexed",
                count=len(failed),
                reason=result.last_error,
                doc_ids=[change.doc_id for change in result.unresolved[:10]],
            )

        failed |= self._dead_letter(letters)
        summary.dead_lettered = len(letters) - len(failed & letters.keys())
        summary.failed = len(failed)
        summary.failures = _failures(records, failed)
        return summary

    def _read_back(self, records: list[Any]) -> ReadBack | None:
        reader = self.table_reader
        if reader is None:
            return None
        return lambda changes, remaining: read_back(reader, records, changes, remaining)

    def _dead_letter(self, letters: dict[int, deadletter.Letter]) -> set[int]:
        """Send the letters; the positions of those that could not be sent."""
        if not letters:
            return set()
        positions = sorted(letters)
        failed_at = self.clock()
        bodies = [deadletter.encoded(deadletter.message(letters[p], failed_at)) for p in positions]
        refused = {positions[i] for i in self.dead_letters.send(bodies)}
        for position in positions:
            if position in refused:  # reported to Lambda instead; the queue logged why
                continue
            letter = letters[position]
            log.warning(
                "record_dead_lettered",
                position=position,
                doc_id=letter.doc_id,
                error_class=letter.error.kind,
                reason=letter.error.message[:500],
            )
        return refused

    def _dead_letter_or_raise(self, letters: list[deadletter.Letter]) -> None:
        failed_at = self.clock()
        bodies = [deadletter.encoded(deadletter.message(letter, failed_at)) for letter in letters]
        if self.dead_letters.send(bodies):
            raise DeadLetterError("the dead-letter queue did not take the malformed event")


def _sequence_number(record: Any) -> str | None:
    if isinstance(record, dict) and isinstance(record.get("dynamodb"), dict):
        value = record["dynamodb"].get("SequenceNumber")
        if isinstance(value, str) and value:
            return value
    return None


def _failures(records: list[Any], failed: set[int]) -> list[dict[str, str]]:
    """``batchItemFailures`` for the failed positions.

    Lambda resumes from the lowest reported sequence number. A failed record without a usable
    one is named by the nearest earlier record that has one (redelivering a few records more is
    harmless: applying is idempotent); with none before it, only failing the whole batch is safe.
    """
    identifiers: list[str] = []
    for position in sorted(failed):
        identifier = _sequence_number(records[position])
        if identifier is None:
            identifier = next(
                (s for p in range(position - 1, -1, -1) if (s := _sequence_number(records[p]))), None
            )
        if identifier is None:
            raise DeadLetterError(
                f"record {position} has no SequenceNumber and could not be dead-lettered: "
                "failing the whole batch so Lambda retries it"
            )
        if identifier not in identifiers:
            identifiers.append(identifier)
    return [{"itemIdentifier": identifier} for identifier in identifiers]
