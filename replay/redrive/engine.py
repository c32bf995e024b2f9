"""One redrive run over one dead-letter queue: receive, read back, apply, then settle each message.

A message is deleted only once its records are applied or found stale, or once what must
replace it (a copy one attempt further, or the message itself in the parking queue) was sent.
Everything else is left in the queue and made visible again when the run ends.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Callable

import structlog

from indexer import deadletter
from indexer.apply import Deadline, RetryPolicy
from indexer.errors import ConversionError, RangeGone, ReadbackFailed, RecordError, Refused, TableMissing
from indexer.ids import document_id
from indexer.layout import Targets
from indexer.records import change_from, head_of, sequence_of
from indexer.search import Store
from indexer.settings import DEFAULT_TIME_BUDGET

from . import messages
from .messages import DeadLetter, StreamRange, Unreadable
from .readback import OLDER_THAN_STREAM, Readback
from .apply import APPLIED, DEAD, KEPT, UNRESOLVED, Unit, apply_units, preview_units, records_detail
from .report import Outcome, Report, Summary, line, tally
from .trust import Binding
from .sqs import Queue, Received

log = structlog.get_logger("replay.redrive.command")

#: Long-poll wait of each receive: it returns at once when messages are there; an empty answer
#: after waiting this long (every SQS server asked) ends the run.
RECEIVE_WAIT_SECONDS = 1
#: Visibility timeout beyond the apply budget: reading ranges back and sending copies must
#: also finish before another reader may see the message.
VISIBILITY_MARGIN_SECONDS = 120
#: Receives in a row that bring only messages already handled in this run before stopping.
MAX_IDLE_RECEIVES = 3


@dataclass(frozen=True)
class _Send:
    """Bodies to send on behalf of one message before it may be deleted."""

    message: int
    queue: Queue
    bodies: list[str]


class Redrive:
    """One run over one dead-letter queue."""

    def __init__(
        self,
        *,
        store: Store,
        targets: Targets,
        dlq: Queue,
        parking: Queue | None,
        readback: Readback,
        binding: Binding,
        max_attempts: int,
        dry_run: bool = False,
        policy: RetryPolicy = RetryPolicy(),
        time_budget: float = DEFAULT_TIME_BUDGET,
        parking_hint: str = "",
        wait: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], Any] = deadletter.now,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.targets = targets
        self.dlq = dlq
        self.parking = parking
        self.readback = readback
        self.binding = binding
        self.max_attempts = max_attempts
        self.dry_run = dry_run
        self.policy = policy
        self.time_budget = time_budget
        self.wait = RECEIVE_WAIT_SECONDS if wait is None else wait
        self.sleep = sleep
        self.clock = clock
        self.say = say
        self.summary = Summary(dlq.url, dry_run=dry_run, parking_hint=parking_hint)
        #: Digests of the copies this run sent to the dead-letter queue: they are the next
        #: run's business, so one run never retries a record twice.
        self._sent: set[str] = set()
        self._seen: set[str] = set()
        #: Messages received and left in the queue: made visible again when the run ends.
        self._held: dict[str, str] = {}
        self._in_flight: dict[str, str] = {}

    @property
    def visibility(self) -> int:
        return int(self.time_budget + VISIBILITY_MARGIN_SECONDS)

    def run(self, max_messages: int | None = None, progress: Any = None) -> Summary:
        """Redrive until the queue yields nothing new or ``max_messages`` were handled."""
        idle = 0
        reports = self.summary.reports
        try:
            while max_messages is None or len(reports) < max_messages:
                wanted = 10 if max_messages is None else min(10, max_messages - len(reports))
                received = self.dlq.receive(wanted, self.visibility, self.wait)
                if not received:
                    break
                fresh = []
                for message in received:
                    if message.message_id in self._seen or _digest(message.body) in self._sent:
                        self._held[message.message_id] = message.receipt
                    else:
                        self._seen.add(message.message_id)
                        fresh.append(message)
                if not fresh:
                    idle += 1
                    if idle >= MAX_IDLE_RECEIVES:
                        break
                    continue
                idle = 0
                # Until settled, an interrupted batch is handed back when the run ends.
                self._in_flight = {message.message_id: message.receipt for message in fresh}
                done = self._batch(fresh)
                self._in_flight = {}
                reports.extend(done)
                if progress is not None:
                    progress.advance(len(done), **tally(done))
                if self.summary.stopped:
                    break
        finally:
            leftover = {**self._held, **self._in_flight}
            if leftover:
                self.dlq.release(list(leftover.values()))
        return self.summary

    # -- one batch -------------------------------------------------------------------------

    def _batch(self, received: list[Received]) -> list[Report]:
        parsed = [messages.parse(m.body) for m in received]
        reports: dict[int, Report] = {}
        units: list[Unit] = []
        for index, (message, found) in enumerate(zip(received, parsed)):
            try:
                early = self._read(index, message, found, units)
            except Exception as exc:  # noqa: BLE001 - the one per-message catch: reported and set aside
                del units[next((i for i, u in enumerate(units) if u.message == index), len(units)):]
                early = self._report(message, found, Outcome.REFUSED,
                                     f"could not be handled ({exc.__class__.__name__}: {str(exc)[:200]})")
                log.error("message_failed", message_id=message.message_id, error_class=exc.__class__.__name__)
            if early is not None:
                reports[index] = early

        if self.dry_run:
            preview_units(units, self.store, self.policy.request_timeout)
        else:
            problem = apply_units(units, self.store, self.targets, Deadline.after(self.time_budget),
                                  self.policy, self.sleep)
            if problem:
                self.summary.stopped = f"Elasticsearch did not take the records ({problem})"

        sends: list[_Send] = []
        for index, (message, found) in enumerate(zip(received, parsed)):
            if index not in reports:
                mine = [unit for unit in units if unit.message == index]
                reports[index] = self._decide(index, message, found, mine, sends)
            elif reports[index].outcome in (Outcome.UNREADABLE, Outcome.REFUSED):
                self._set_aside(index, message, reports[index], sends)
        if self.dry_run:
            self._held.update((message.message_id, message.receipt) for message in received)
        else:
            self._settle(received, reports, sends)
        ordered = [reports[index] for index in range(len(received))]
        for report in ordered:
            self._tell(report)
        return ordered

    def _read(self, index: int, message: Received, found: messages.Message, units: list[Unit]) -> Report | None:
        """Add the message's records to ``units``; its report instead when it stops here."""
        if isinstance(found, Unreadable):
            return self._report(message, found, Outcome.UNREADABLE, "")
        problem = self.binding.message_problem(found)
        if problem:
            return self._report(message, found, Outcome.REFUSED, f"{problem}; nothing written")
        # Taken before the table is read: the items it returns are at least this recent.
        read = int(time.time() * 1000)
        try:
            records = self._records(found)
        except Refused as exc:
            return self._report(message, found, Outcome.REFUSED, f"{exc}; nothing written")
        except RangeGone as exc:
            return self._report(message, found, Outcome.GONE, f"{exc}; left in the queue")
        except ReadbackFailed as exc:
            return self._report(message, found, Outcome.UNRESOLVED, f"{exc}; left in the queue")
        for original, current in records:
            unit = Unit(index, original)  # a record failing again is re-queued as it came
            if current is None:
                unit.error = messages.truncated_error()
            else:
                try:
                    # Read back from the table: the present, never older than a snapshot; the
                    # document keeps when it was read (the snapshot rule, indexer/actions.py).
                    from_table = current is not original
                    unit.change = change_from(head_of(current, len(units), self.binding.alias),
                                              read if from_table else None)
                    unit.change.table_state = from_table
                except RecordError as error:
                    unit.error = error
            units.append(unit)
        return None

    def _records(self, found: DeadLetter | StreamRange) -> list[tuple[Any, Any]]:
        """The records a message stands for, each paired with what to apply: its table's
        *current* item under the record's own sequence number (None for a truncated one).

        Why the current item rather than the record's image: a dead letter can be older than a
        replay's snapshot of the same item (sequence 0). Applied as it was, it would win over
        that snapshot and regress the document, and no later record would repair it; the
        current item under the old sequence is never older than what the index holds, and
        any newer record still wins over it. Without the table, the record is applied as is.
        """
        if isinstance(found, StreamRange):
            records = self.readback.stream_range(found.stream_arn, found.shard_id, found.start, found.end)
        else:
            self._vouch(found.record)
            records = [found.record]
        return [(record, self._current(record, found)) for record in records]

    def _vouch(self, record: Any) -> None:
        """Raise :class:`Refused` unless the stream vouches for the record's sequence number:
        it holds the same record there (same keys, same event), or the number is older than
        everything it holds. A record without a valid number fails later, as malformed."""
        stream = record.get("dynamodb") if isinstance(record, dict) else None
        if not isinstance(stream, dict):
            return
        try:
            sequence = sequence_of(stream.get("SequenceNumber"))
        except RecordError:
            return
        held = self.readback.held_record(record["eventSourceARN"], sequence)
        if held == OLDER_THAN_STREAM:
            return
        if not isinstance(held, dict):
            raise Refused(f"sequence number {sequence} is not in the table's stream (forged, or its stream is gone)")
        if held.get("eventName") != record.get("eventName") or held["dynamodb"].get("Keys") != stream.get("Keys"):
            raise Refused(f"the stream's record at sequence number {sequence} is another event or item")

    def _current(self, record: Any, found: DeadLetter | StreamRange) -> Any:
        needs_item = isinstance(found, DeadLetter) and found.needs_item
        if not isinstance(record, dict) or not isinstance(record.get("dynamodb"), dict):
            return record  # malformed: it fails again, with its reason
        try:
            document_id(record["dynamodb"].get("Keys"))
        except ConversionError:
            return record  # no item to read: the record fails again, with that reason
        try:
            return self.readback.item_record(record, self.binding.table, self.binding.table_arn)
        except TableMissing:
            if needs_item:
                raise
            return record

    # -- per message -----------------------------------------------------------------------

    def _decide(self, index: int, message: Received, found: DeadLetter | StreamRange, units: list[Unit],
                sends: list[_Send]) -> Report:
        outcomes = {unit.outcome for unit in units}
        if UNRESOLVED in outcomes:
            return self._report(message, found, Outcome.UNRESOLVED, "Elasticsearch did not answer; left unchanged")
        if KEPT in outcomes:
            return self._report(message, found, Outcome.UNRESOLVED, "a newer record of the same item, in another "
                                "message, was refused; left unchanged for the next run")
        if DEAD not in outcomes:
            report = self._report(message, found, Outcome.REDRIVEN if APPLIED in outcomes else Outcome.STALE,
                                  records_detail(units, isinstance(found, StreamRange), self.dry_run))
            if not self.dry_run:
                applied = [u.change for u in units if u.outcome == APPLIED and u.change is not None]
                report.indexed = sum(1 for change in applied if not change.delete)
                report.deleted = len(applied) - report.indexed
            return report
        dead = [unit for unit in units if unit.outcome == DEAD and unit.error is not None]
        failed_at = self.clock()
        if isinstance(found, DeadLetter):
            bodies = [deadletter.encoded(messages.retried_body(found, u.error, failed_at, *u.where()))
                      for u in dead[:1] if u.error is not None]
            attempts = found.attempts + 1
        else:
            bodies = [deadletter.encoded(messages.range_letter(u.record, u.error, failed_at, *u.where()))
                      for u in dead if u.error is not None]
            attempts = StreamRange.attempts + 1
        reason = "; ".join(f"{u.error.kind}: {u.error.message}"[:300] for u in dead[:3] if u.error is not None)
        would = self.dry_run
        if attempts >= self.max_attempts and self.parking is not None:
            sends.append(_Send(index, self.parking, bodies))
            return self._report(message, found, Outcome.PARKED, f"{reason}; attempt {attempts} of {self.max_attempts}: "
                                f"{'would move' if would else 'moved'} to the parking queue")
        sends.append(_Send(index, self.dlq, bodies))
        if attempts >= self.max_attempts:
            self.summary.unparked += 1
            where = (f"attempt {attempts} reached --max-attempts {self.max_attempts} but there is no parking queue; "
                     f"{'would stay' if would else 'stays'} in the dead-letter queue")
        else:
            where = f"{'would be re-queued' if would else 're-queued'} as attempt {attempts} of {self.max_attempts}"
        if isinstance(found, StreamRange):
            where += f" ({len(bodies)} record(s) as dead-letter messages with their payload)"
        return self._report(message, found, Outcome.FAILED_AGAIN, f"{reason}; {where}")

    def _set_aside(self, index: int, message: Received, report: Report, sends: list[_Send]) -> None:
        if self.parking is not None:
            sends.append(_Send(index, self.parking, [message.body]))
            report.detail = "; ".join(filter(None, [
                report.detail, f"{'would be moved' if self.dry_run else 'moved'} to the parking queue as is"]))
        else:
            report.detail = "; ".join(filter(None, [report.detail, "left in the queue"]))

    def _settle(self, received: list[Received], reports: dict[int, Report], sends: list[_Send]) -> None:
        """Send what must be sent, then delete what is done. A message whose copies could not
        all be sent is left as it was (copies that did go out are harmless duplicates)."""
        unsent: set[int] = set()
        for queue in {id(send.queue): send.queue for send in sends}.values():
            batch = [(send.message, body) for send in sends if send.queue is queue for body in send.bodies]
            refused = set(queue.send([body for _, body in batch]))
            for position, (index, body) in enumerate(batch):
                if position in refused:
                    unsent.add(index)
                elif queue is self.dlq:
                    self._sent.add(_digest(body))
        sent = {send.message for send in sends}
        done: list[int] = []
        for index, message in enumerate(received):
            report = reports[index]
            if index in unsent:
                report.outcome = Outcome.UNRESOLVED
                report.detail = f"could not send it on ({report.detail}); left unchanged"
            elif report.outcome in (Outcome.REDRIVEN, Outcome.STALE) or index in sent:
                done.append(index)
                continue
            self._held[message.message_id] = message.receipt
        for position in self.dlq.delete([received[index].receipt for index in done]):
            log.warning("message_not_deleted", message_id=received[done[position]].message_id,
                        hint="it will be received again; re-applying it is harmless")

    def _report(self, message: Received, found: messages.Message, outcome: Outcome, detail: str) -> Report:
        kind = {DeadLetter: "dead-letter", StreamRange: "stream-range"}.get(type(found), "unreadable")
        return Report(message.message_id, kind, outcome, found.describe(), detail)

    def _tell(self, report: Report) -> None:
        fields = {"message_id": report.message_id, "kind": report.kind, "outcome": report.outcome.value,
                  "message": report.what[:300], "detail": report.detail[:1000], "dry_run": self.dry_run}
        if report.outcome in (Outcome.REDRIVEN, Outcome.STALE):
            log.debug("message_redriven", **fields)
        else:
            log.warning("message_not_redriven", **fields)
        if self.dry_run and self.say is not None:
            self.say(line(report, dry_run=True))


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()
