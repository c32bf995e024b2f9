"""The records of one redrive batch through the ordering guard, or a read-only preview of it.

Both collapse the batch per document (``indexer.records.collapse``) and judge staleness with
the guard's own test (``indexer.actions.is_stale``); applying goes through
``indexer.apply.apply``, the handler's write loop. Nothing here decides what happens to the
queue messages: it only records what became of each record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from indexer.actions import is_stale
from indexer.apply import Deadline, RetryPolicy, apply
from indexer.errors import RecordError
from indexer.layout import Targets, alias_indices
from indexer.records import Change, collapse
from indexer.search import Store

#: What became of one record.
APPLIED, STALE, SUPERSEDED, DEAD, UNRESOLVED = "applied", "stale", "superseded", "dead", "unresolved"
#: Superseded by a newer record of another message that the cluster refused: left in the queue,
#: since one message's content must never get another message deleted.
KEPT = "kept"


@dataclass
class Unit:
    """One record to redrive (a message holds one, a stream range several) and its fate."""

    #: Position of its message in the received batch.
    message: int
    record: Any
    change: Change | None = None
    #: Why it cannot be indexed: from parsing it, or Elasticsearch refusing the document.
    error: RecordError | None = None
    outcome: str = ""

    def where(self) -> tuple[str | None, str | None]:
        """Document id and alias, when the record got as far as a change."""
        return (self.change.doc_id, self.change.alias) if self.change is not None else (None, None)


def mark(units: list[Unit], change: Change, outcome: str) -> None:
    """The change's outcome for its own record; the records it superseded in this batch are
    older than it, so they are done once it is applied or stale. When the newer record was
    refused, only records of its own message are done with it: a record of another message
    is kept, so no message is deleted because of what another one holds."""
    own = units[change.position].message
    for position in change.covers:
        if position == change.position:
            units[position].outcome = outcome
        elif outcome in (APPLIED, STALE) or units[position].message == own:
            units[position].outcome = SUPERSEDED
        else:
            units[position].outcome = KEPT


def _latest(units: list[Unit]) -> list[Change]:
    for unit in units:
        if unit.error is not None:
            unit.outcome = DEAD
    latest, _ = collapse([unit.change for unit in units if unit.change is not None and unit.error is None])
    return latest


def apply_units(
    units: list[Unit],
    store: Store,
    targets: Targets,
    deadline: Deadline,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Apply the batch; the reason the cluster did not take some records, or "" when it did."""
    latest = _latest(units)
    if not latest:
        return ""
    result = apply(latest, store, targets, deadline, policy, sleep)
    for change in result.applied:
        mark(units, change, APPLIED)
    for change in result.stale:
        mark(units, change, STALE)
    for change, error in result.dead:
        mark(units, change, DEAD)
        units[change.position].error = error
    for change in result.unresolved:
        for position in change.covers:
            units[position].outcome = UNRESOLVED
    return (result.last_error or "no answer in time") if result.unresolved else ""


def preview_units(units: list[Unit], store: Store, timeout: float) -> None:
    """What applying would do, from reads only: the indices the alias has now (none are
    created) and what they hold. A record marked applied here may still be refused by the
    cluster when it is written: only writing can tell."""
    latest = _latest(units)
    indices = {alias: existing_targets(store, alias, timeout) for alias in {change.alias for change in latest}}
    pairs = [(index, change.doc_id) for change in latest for index in indices[change.alias]]
    current = store.current(pairs, timeout) if pairs else {}
    for change in latest:
        names = indices[change.alias]
        stale = bool(names) and all(is_stale(change, current[(name, change.doc_id)]) for name in names)
        mark(units, change, STALE if stale else APPLIED)


def existing_targets(store: Store, alias: str, timeout: float) -> list[str]:
    """The indices a write to ``alias`` would go to (as ``indexer.layout.Targets`` finds them),
    without creating the index when there is none yet."""
    return alias_indices(store, alias, timeout).writes()


def records_detail(units: list[Unit], from_stream: bool, dry_run: bool) -> str:
    """What became of a redriven message's records, for its report line."""
    if from_stream:
        applied = sum(1 for u in units if u.outcome == APPLIED)
        return (f"{len(units)} read back from the stream: {applied} {'to apply' if dry_run else 'applied'}, "
                f"{len(units) - applied} stale or superseded")
    if units and units[0].outcome == SUPERSEDED:
        return "a newer record of the same item came in the same batch"
    return ""
