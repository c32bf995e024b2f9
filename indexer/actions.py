"""The ordering guard as pure functions: what an index holds → which writes to send → what came back.

The guard is optimistic concurrency, which every Elasticsearch (and OpenSearch) cluster has,
without Painless: read each document's stored sequence number and its ``_seq_no`` /
``_primary_term`` (``mget``), decide in Python with arbitrary-size integers, then write with
``if_seq_no``/``if_primary_term`` (or ``create`` where nothing exists). A write only lands if
the document is still exactly what was read, so an older record can never replace a newer one
whatever the interleaving; a conflict means "read again and decide again". Deletes write a
tombstone instead of deleting, so a late, older upsert finds it and loses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Iterable

from .encode import dumps
from .records import RESERVED_FIELD, SNAPSHOT_SEQUENCE, Change

#: The stored sequence of a document that has no bookkeeping (written by someone else): it
#: loses against every stream record.
UNKNOWN_SEQUENCE = -1


@dataclass(frozen=True, slots=True)
class Current:
    """What one index holds for one document id, as far as the guard cares."""

    sequence: int
    seq_no: int
    primary_term: int
    #: When the document's content was read from the table (ms), for a table state; else None.
    read: int | None = None
    #: When the record behind the document was made (ms, ``ApproximateCreationDateTime``), if known.
    at: int | None = None


@dataclass(slots=True)
class Write:
    """One guarded bulk action: put ``change`` into ``index`` if it still holds ``current``."""

    index: str
    change: Change
    current: Current | None


def current_of(doc: dict[str, Any]) -> Current | None:
    """Interpret one ``mget`` entry; None when the index holds no such document."""
    if not doc.get("found"):
        return None
    bookkeeping = (doc.get("_source") or {}).get(RESERVED_FIELD)
    sequence = UNKNOWN_SEQUENCE
    read = at = None
    if isinstance(bookkeeping, dict):
        text = bookkeeping.get("seq")
        if isinstance(text, str) and text.isdigit():
            sequence = int(text)
        read, at = bookkeeping.get("read"), bookkeeping.get("at")
        read = read if type(read) is int else None
        at = at if type(at) is int else None
    return Current(sequence, int(doc["_seq_no"]), int(doc["_primary_term"]), read, at)


def is_stale(change: Change, current: Current | None) -> bool:
    """True when the index already holds this change or a newer one (equal = already applied,
    except for a repair, which replaces what holds the same sequence)."""
    if current is None:
        return False
    if change.repair:
        return current.sequence > change.sequence
    return current.sequence >= change.sequence


#: How far from a table read a record's time must be to be judged by it: covers
#: ApproximateCreationDateTime's rounding (down to the second) and the clock of the host that
#: ran the replay. README "Snapshots and records" gives the argument.
SNAPSHOT_MARGIN_MS = 60_000


def read_time(current: Current | None, snapshot_started_ms: int | None) -> int | None:
    """When what an index holds for a document was read from the table (ms): the scan start of
    a rebuilt index for a snapshot (sequence 0) or a missing document; the read time of a table
    state the handler wrote; None for a record's image, which is judged by sequence alone."""
    if current is None or current.sequence == SNAPSHOT_SEQUENCE:
        return snapshot_started_ms
    return current.read


def older_than_snapshot(change: Change, read_ms: int | None) -> bool:
    """True when ``change`` was made clearly before a table read (a rebuild's scan start, or
    the handler's read of the item): the read saw it (consistent reads), so what it wrote — or
    the absence of any document — already reflects it or something newer.

    Repairs and read-back table states are the table's present, never older than a read."""
    if read_ms is None or change.at is None or change.repair or change.table_state:
        return False
    return change.at < read_ms - SNAPSHOT_MARGIN_MS


def in_snapshot_window(change: Change, read_ms: int | None, started_ms: int | None = None) -> bool:
    """True when ``change`` was made neither clearly before a table read (``read_ms``: the read
    saw it) nor clearly after the rebuild's scan started (``started_ms``, by default the read:
    from then on every change of the item reaches the rebuilt index too, by sequence)."""
    if read_ms is None or change.at is None or change.repair or change.table_state:
        return False
    until = read_ms if started_ms is None else started_ms
    return read_ms - SNAPSHOT_MARGIN_MS <= change.at < until + SNAPSHOT_MARGIN_MS


def stale_against_snapshot(change: Change, current: Current | None, snapshot_started_ms: int | None) -> bool:
    """The snapshot rule: a record clearly older than the table read behind a document (a
    snapshot, a missing document in a rebuilt index, a table state) loses to it."""
    return older_than_snapshot(change, read_time(current, snapshot_started_ms))


def needs_table_state(change: Change, current: Current | None, snapshot_started_ms: int | None) -> bool:
    """The snapshot rule's third case: a record of the uncertain window around the table read
    behind a document cannot be judged by its time, so the item's present state is read from
    the table and written under the record's sequence (indexer/tablestate.py).

    Past the margin after the scan start, a record is applied by sequence even over a table
    state read later: every change after it reaches the index too, so a hot item's records
    do not read the table again and again after one read."""
    return in_snapshot_window(change, read_time(current, snapshot_started_ms), snapshot_started_ms)


def known_as_of(current: Current) -> int | None:
    """When a document's content was last known to be the item's (ms): the read of a table
    state, else the time of the record behind it; None when neither is recorded."""
    return current.read if current.read is not None else current.at


def written_in_transition(current: Current | None, snapshot_started_ms: int | None) -> bool:
    """True when a rebuilt index holds a document (a record's image or tombstone, or a table
    state) known only as of before its scan start + the margin: until then not every live
    writer wrote to the new index, so a later change of the item may have reached only the old
    one. A rebuild's snapshot replaces such a document instead of losing to it (README,
    "Snapshots and records"). Never a snapshot, nor a document whose time or sequence is unknown."""
    if current is None or snapshot_started_ms is None:
        return False
    if current.sequence in (SNAPSHOT_SEQUENCE, UNKNOWN_SEQUENCE):
        return False
    known = known_as_of(current)
    return known is not None and known < snapshot_started_ms + SNAPSHOT_MARGIN_MS


def read_after(current: Current, read_ms: int) -> bool:
    """True when a table read at ``read_ms`` was clearly after what ``current`` holds was known
    (consistent reads): what the read returned is at least as new."""
    known = known_as_of(current)
    return known is not None and known < read_ms - SNAPSHOT_MARGIN_MS


def action_line(write: Write) -> bytes:
    """The bulk action line: ``create`` where nothing exists, else an ``index`` guarded by the
    exact revision that was read.

    Assembled from its parts: the same bytes as serializing the nested dict, in a quarter of
    the time (one line per document, so it shows in bench/convert_bench.py)."""
    target = b'{"_index":' + dumps(write.index) + b',"_id":' + dumps(write.change.doc_id)
    if write.current is None:
        return b'{"create":' + target + b"}}"
    return b'{"index":%s,"if_seq_no":%d,"if_primary_term":%d}}' % (
        target, write.current.seq_no, write.current.primary_term,
    )


def bulk_body(writes: Iterable[Write]) -> bytes:
    """The NDJSON body of one bulk request."""
    lines: list[bytes] = []
    for write in writes:
        lines.append(action_line(write))
        lines.append(write.change.source)
    lines.append(b"")
    return b"\n".join(lines)


class Outcome(enum.Enum):
    APPLIED = "applied"
    #: The document changed between read and write: read again, decide again.
    CONFLICT = "conflict"
    #: Transient (429, 5xx): retry later with backoff.
    RETRY = "retry"
    #: The index is gone (deleted or swapped away): look the targets up again.
    MISSING_INDEX = "missing_index"
    #: The document itself is refused (400 mapping or parsing errors): dead-letter it.
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class ItemResult:
    outcome: Outcome
    error_type: str = ""
    reason: str = ""
    #: The revision an applied write made (-1 when the response did not say).
    seq_no: int = -1
    primary_term: int = -1


_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_APPLIED = ItemResult(Outcome.APPLIED)


def item_result(item: dict[str, Any]) -> ItemResult:
    """Interpret one entry of a bulk response's ``items``."""
    ((_, body),) = item.items()
    status = int(body.get("status", 500))
    if 200 <= status < 300:
        seq_no, primary_term = body.get("_seq_no"), body.get("_primary_term")
        if type(seq_no) is int and type(primary_term) is int:
            return ItemResult(Outcome.APPLIED, seq_no=seq_no, primary_term=primary_term)
        return _APPLIED
    error = body.get("error") or {}
    error_type = str(error.get("type", f"http_{status}")) if isinstance(error, dict) else str(error)
    reason = str(error.get("reason", "")) if isinstance(error, dict) else ""
    caused_by = error.get("caused_by") if isinstance(error, dict) else None
    if isinstance(caused_by, dict) and caused_by.get("reason"):
        reason = f"{reason} (caused by {caused_by.get('type')}: {caused_by.get('reason')})"
    if status == 409:
        return ItemResult(Outcome.CONFLICT, error_type, reason)
    if status == 404 and error_type == "index_not_found_exception":
        return ItemResult(Outcome.MISSING_INDEX, error_type, reason)
    if status in _RETRY_STATUSES or status >= 500:
        return ItemResult(Outcome.RETRY, error_type, reason)
    return ItemResult(Outcome.PERMANENT, error_type, reason)


def item_results(response: dict[str, Any], expected: int) -> list[ItemResult]:
    """Interpret a whole bulk response; a response that does not match the request is retried."""
    items = response.get("items")
    if not isinstance(items, list) or len(items) != expected:
        return [ItemResult(Outcome.RETRY, "bulk_response_mismatch", "bulk response lost items")] * expected
    return [item_result(item) for item in items]
