"""What redrive did (or would do) with each message, the run's summary, and its exit code.

Pure: formatting is separate from printing, so the text is tested as text.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

#: Problem lines shown under the summary; the logs carry every one.
MAX_LISTED = 50


class Outcome(enum.Enum):
    #: Every record of the message was applied (or was already there): message deleted.
    REDRIVEN = "redriven"
    #: Older than what the index holds (or than a newer record of the same item in the same
    #: batch): skipped, never applied; message deleted.
    STALE = "stale"
    #: Refused again: re-sent with its attempt count raised and the new reason.
    FAILED_AGAIN = "failed again"
    #: Refused again at ``--max-attempts``: moved to the parking queue.
    PARKED = "parked"
    #: Not JSON, or no shape redrive knows: left in the queue, or moved to the parking queue.
    UNREADABLE = "unreadable"
    #: Names another table, stream, region, account or index than the run's, or a sequence
    #: number the stream does not hold, or could not be handled at all: moved as is to the
    #: parking queue, or left in the queue; nothing of it was written.
    REFUSED = "refused"
    #: An on-failure message whose records the stream no longer holds: left in the queue.
    GONE = "gone"
    #: Elasticsearch, DynamoDB or SQS did not answer in time: left unchanged, try again later.
    UNRESOLVED = "unresolved"


#: Outcomes that make the exit code 1.
PROBLEMS = frozenset({Outcome.FAILED_AGAIN, Outcome.PARKED, Outcome.UNREADABLE, Outcome.REFUSED, Outcome.GONE,
                      Outcome.UNRESOLVED})

_DRY_LABELS = {
    Outcome.REDRIVEN: "would apply",
    Outcome.STALE: "stale",
    Outcome.FAILED_AGAIN: "would fail again",
    Outcome.PARKED: "would park",
    Outcome.UNREADABLE: "unreadable",
    Outcome.REFUSED: "refused",
    Outcome.GONE: "gone",
    Outcome.UNRESOLVED: "unresolved",
}


@dataclass
class Report:
    """One message: what it is and what happened to it."""

    message_id: str
    #: ``dead-letter``, ``stream-range`` or ``unreadable``.
    kind: str
    outcome: Outcome
    what: str
    detail: str = ""
    indexed: int = 0
    deleted: int = 0


@dataclass
class Summary:
    queue_url: str
    dry_run: bool = False
    reports: list[Report] = field(default_factory=list)
    #: Messages past ``--max-attempts`` that stayed in the dead-letter queue (no parking queue).
    unparked: int = 0
    #: The parking queue to create or name when ``unparked`` (the default's URL).
    parking_hint: str = ""
    #: Why the run stopped before the queue was empty, if it did.
    stopped: str = ""

    def counts(self) -> dict[str, int]:
        return {
            "messages": len(self.reports),
            **{outcome.name.lower(): 0 for outcome in Outcome},
            **tally(self.reports),
            "records_indexed": sum(r.indexed for r in self.reports),
            "records_deleted": sum(r.deleted for r in self.reports),
            "unparked": self.unparked,
        }

    def exit_code(self) -> int:
        """0 when every message was redriven or stale (or there were none), else 1."""
        return 1 if self.stopped or any(r.outcome in PROBLEMS for r in self.reports) else 0


def tally(reports: list[Report]) -> dict[str, int]:
    """Messages per outcome (only the outcomes that occur)."""
    counts: dict[str, int] = {}
    for report in reports:
        key = report.outcome.name.lower()
        counts[key] = counts.get(key, 0) + 1
    return counts


def label(outcome: Outcome, dry_run: bool) -> str:
    return _DRY_LABELS[outcome] if dry_run else outcome.value


def line(report: Report, dry_run: bool) -> str:
    """One message on one line: ``<outcome>  <message id>  <kind>: <what> (<detail>)``."""
    detail = f" ({report.detail})" if report.detail else ""
    return f"{label(report.outcome, dry_run):<16} {report.message_id}  {report.kind}: {report.what}{detail}"


def text(summary: Summary) -> str:
    """The summary printed at the end of a run."""
    counts = summary.counts()
    if summary.dry_run:
        lines = [f"dry run of redrive from {summary.queue_url}: {_plural(counts['messages'], 'message')}, nothing changed"]
    else:
        lines = [f"redrive from {summary.queue_url}: {_plural(counts['messages'], 'message')}"]
    for outcome in Outcome:
        count = counts[outcome.name.lower()]
        extra = ""
        if outcome is Outcome.REDRIVEN and not summary.dry_run and count:
            extra = f"  ({_plural(counts['records_indexed'], 'record')} indexed, {counts['records_deleted']} deleted)"
        lines.append(f"  {label(outcome, summary.dry_run):<16} {count:>6}{extra}")
    if not summary.dry_run:
        problems = [r for r in summary.reports if r.outcome in PROBLEMS]
        lines.extend(line(r, False) for r in problems[:MAX_LISTED])
        if len(problems) > MAX_LISTED:
            lines.append(f"... and {len(problems) - MAX_LISTED} more (each is in the log)")
    if counts["gone"]:
        lines.append(
            "The stream no longer holds the records of the 'gone' messages (DynamoDB Streams keeps 24 hours): "
            "rebuild the index from the table with `python -m replay --full`, then delete those messages."
        )
    if summary.unparked:
        lines.append(
            f"{summary.unparked} message(s) reached --max-attempts but there is no parking queue: they "
            f"{'would stay' if summary.dry_run else 'stay'} in the dead-letter queue with their attempt count "
            f"raised. Create {summary.parking_hint or 'a parking queue'} "
            "or pass --parking-queue-url (PARKING_QUEUE_URL)."
        )
    if summary.stopped:
        lines.append(f"Stopped early: {summary.stopped}. The messages not handled are still in the queue; run again.")
    return "\n".join(lines)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
