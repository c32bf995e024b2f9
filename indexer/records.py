"""Stream records → validated changes (upsert or delete of one document), with no I/O.

A record that cannot become a change raises :class:`RecordError` with a reason a person can act
on; the caller dead-letters it and carries on with the rest of the batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import convert
from .encode import dumps_to_keep
from .errors import RecordError
from .ids import document_id

#: The one field of ``_source`` that holds bookkeeping; tombstones hold nothing else.
RESERVED_FIELD = "_ddb"
#: Sequence numbers are 21–40 digit decimals; stored zero-padded so text order is numeric order.
SEQUENCE_WIDTH = 40
#: The sequence of an item read by a table scan: older than any stream record, so anything the
#: live path has written (or writes later) wins over it.
SNAPSHOT_SEQUENCE = 0

_TABLE_ARN = re.compile(r"arn:aws[a-z-]*:dynamodb:[^:]*:[^:]*:table/([^/]+)(/stream/.*)?")
_INDEX_NAME_BAD = re.compile(r'[\\/*?"<>| ,#:A-Z]')

#: Later than any record's creation time (the year 5138): a time beyond it is forged.
MAX_EPOCH_SECONDS = 1e11

UPSERT_EVENTS = frozenset({"INSERT", "MODIFY"})
DELETE_EVENT = "REMOVE"


@dataclass(slots=True)
class Change:
    """The effect of one stream record on one document of one alias."""

    alias: str
    doc_id: str
    sequence: int
    delete: bool
    #: ``_source`` to write, as JSON: the converted image (nothing, for a tombstone) plus
    #: bookkeeping. Serialized once here so retries and dual writes reuse the bytes.
    source: bytes
    #: Position in the batch of the record this change comes from.
    position: int
    #: Positions of every record this change stands for: itself and those it superseded.
    covers: list[int] = field(default_factory=list)
    #: An INSERT: the item did not exist before, so the document most likely does not either,
    #: and a plain ``create`` may be tried before reading (a conflict then reads as usual).
    fresh: bool = False
    #: A repair (``verify --fix``): the table's state written under the stored sequence. It
    #: wins the tie with what it repairs, and loses to every real record after it.
    repair: bool = False
    #: The record's ``ApproximateCreationDateTime`` in milliseconds, when it has one.
    at: int | None = None
    #: The image is the table's current item (redrive reads it back): never older than a snapshot.
    table_state: bool = False
    #: When the handler read that item from the table (ms), kept in the document: records made
    #: clearly before it are stale against it (indexer/actions.py, the snapshot rule).
    read: int | None = None

    @property
    def snapshot(self) -> bool:
        """A scanned item: it loses to anything already there, so it is written blind."""
        return self.sequence == SNAPSHOT_SEQUENCE and not self.repair

    def __post_init__(self) -> None:
        if not self.covers:
            self.covers = [self.position]


def malformed(message: str) -> RecordError:
    return RecordError("malformed_record", message)


def sequence_of(text: Any) -> int:
    """The record's ``SequenceNumber`` as an integer (it does not fit a 64-bit long)."""
    # isdigit() alone admits other scripts' digits; with isascii() it is [0-9]+.
    if type(text) is not str or not (0 < len(text) <= SEQUENCE_WIDTH and text.isdigit() and text.isascii()):
        raise malformed(f"dynamodb.SequenceNumber must be a string of 1 to 40 digits, got {text!r:.60}")
    return int(text)


def padded_sequence(sequence: int) -> str:
    return str(sequence).zfill(SEQUENCE_WIDTH)


def table_of(arn: Any) -> str | None:
    """The table name in a stream or table ARN, or None when there is none to read."""
    if type(arn) is not str:
        return None
    found = _TABLE_ARN.fullmatch(arn)
    return found.group(1) if found else None


def alias_problem(name: str) -> str | None:
    """Why ``name`` cannot be an Elasticsearch alias, or None when it can."""
    if not name:
        return "it is empty"
    if name != name.lower() or _INDEX_NAME_BAD.search(name):
        return 'it must be lower-case without spaces or any of \\ / * ? " < > | , # :'
    if name[0] in "-_+" or name in {".", ".."}:
        return "it must not start with -, _ or +"
    if len(name.encode("utf-8")) > 200:
        return "it is longer than 200 bytes"
    return None


def _alias_for(record: dict[str, Any], default_alias: str | None) -> str:
    if default_alias:
        return default_alias
    table = table_of(record.get("eventSourceARN"))
    if table is None:
        raise malformed(
            "cannot tell which index to write: set INDEX_NAME (or TABLE_NAME), "
            "or deliver records with a DynamoDB eventSourceARN"
        )
    return table.lower()


def _time_ms(stream: dict[str, Any]) -> int | None:
    """``ApproximateCreationDateTime`` in ms; None when absent or not a time at all (a forged
    record's ``1e999`` parses as infinity, which no integer holds)."""
    seconds = stream.get("ApproximateCreationDateTime")
    if type(seconds) in (int, float) and 0 <= seconds < MAX_EPOCH_SECONDS:
        return int(seconds * 1000)
    return None


@dataclass(slots=True)
class Head:
    """What a record says about which document it changes and how new it is: everything
    collapsing needs, read before the (costlier) conversion of its image."""

    alias: str
    doc_id: str
    sequence: int
    position: int
    delete: bool
    #: The DynamoDB JSON image to convert (upserts), still unconverted.
    image: Any
    at: int | None
    fresh: bool


def head_of(record: Any, position: int, default_alias: str | None = None) -> Head:
    """The record's document and sequence; raises :class:`RecordError` when its envelope is
    unusable (anything but the content of its NewImage, which :func:`change_from` converts).

    With an alias configured, the C walk reads the common record (a plain one-string key) in one
    call; for any other record it answers None and the checks below decide, as they define."""
    if default_alias and convert._native is not None:
        quick = convert._native.head(record)
        if quick is not None:
            doc_id, sequence, delete, image, at, fresh = quick
            return Head(default_alias, doc_id, sequence, position, delete, image, at, fresh)
    if type(record) is not dict:
        raise malformed(f"a record must be an object, got {type(record).__name__}")
    source_name = record.get("eventSource", "aws:dynamodb")
    if source_name != "aws:dynamodb":
        raise malformed(f"eventSource is {source_name!r:.60}, not 'aws:dynamodb'")
    event_name = record.get("eventName")
    if type(event_name) is not str or (event_name not in UPSERT_EVENTS and event_name != DELETE_EVENT):
        raise malformed(f"eventName must be INSERT, MODIFY or REMOVE, got {event_name!r:.60}")
    stream = record.get("dynamodb")
    if type(stream) is not dict:
        raise malformed("the record has no 'dynamodb' object")
    sequence = sequence_of(stream.get("SequenceNumber"))
    doc_id = document_id(stream.get("Keys"))
    alias = _alias_for(record, default_alias)
    at = _time_ms(stream)
    if event_name == DELETE_EVENT:
        return Head(alias, doc_id, sequence, position, True, None, at, False)
    image = stream.get("NewImage")
    if image is None:
        raise malformed(
            f"{event_name} record has no NewImage: the stream view type must be "
            "NEW_IMAGE or NEW_AND_OLD_IMAGES"
        )
    return Head(alias, doc_id, sequence, position, False, image, at, event_name == "INSERT")


def change_from(head: Head, read: int | None = None) -> Change:
    """The change ``head``'s record asks for: its image converted (raises :class:`RecordError`
    when the image cannot be), or a tombstone; ``read``: the image is the table's, read then."""
    if head.delete:
        return tombstone(head.alias, head.doc_id, head.sequence, head.position, head.at, read)
    change = upsert(head.alias, head.doc_id, head.image, head.sequence, head.position, head.at, read)
    change.fresh = head.fresh
    return change


def unconverted(head: Head) -> Change:
    """The change ``head``'s record asks for, its image not converted yet (an empty source):
    enough to decide which documents the guard must read."""
    return Change(head.alias, head.doc_id, head.sequence, head.delete, b"", head.position,
                  fresh=head.fresh, at=head.at)


def change_of(record: Any, position: int, default_alias: str | None = None) -> Change:
    """The change a stream record asks for; raises :class:`RecordError` when there is none."""
    return change_from(head_of(record, position, default_alias))


def _bookkeeping(sequence: int, at: int | None, read: int | None = None) -> dict[str, Any]:
    bookkeeping: dict[str, Any] = {"seq": padded_sequence(sequence)}
    if at is not None:
        bookkeeping["at"] = at
    if read is not None:
        bookkeeping["read"] = read
    return bookkeeping


def document_of(image: Any) -> dict[str, Any]:
    """The document for an item image, refused when its attribute names would reach the
    bookkeeping field or collide once Elasticsearch expands dotted names into object paths."""
    document = convert.item(image)
    problem = name_problem(document)
    if problem:
        kind = "reserved_attribute" if problem.startswith("reserved") else "colliding_attribute_names"
        raise RecordError(kind, problem.split(": ", 1)[1])
    return document


def name_problem(document: dict[str, Any]) -> str | None:
    """Why the document's field names cannot be indexed as they are, or None.

    Elasticsearch reads ``"a.b": 1`` as ``{"a": {"b": 1}}``. So ``"_ddb.deleted": true`` would
    write the tombstone flag and hide a live item behind the alias, and ``"a.b"`` beside a map
    ``a`` holding ``b`` are two values for one field. Only documents with a dotted name pay for
    more than one look at each name. The C walk, when built, vouches for the common document
    (no dot anywhere, no name starting with the reserved one) in one pass."""
    if convert._native is not None and convert._native.ordinary_names(document, RESERVED_FIELD):
        return None
    width = len(RESERVED_FIELD)
    for name in document:
        if name.startswith(RESERVED_FIELD) and (len(name) == width or name[width] == "."):
            return (f"reserved: the item has an attribute named {name!r}, which reaches {RESERVED_FIELD!r}, "
                    "the field the indexer reserves for its bookkeeping")
    if not _has_dotted_name(document):
        return None
    kinds: dict[tuple[str, ...], str] = {}
    return _collision(document, (), kinds)


def _has_dotted_name(value: dict[str, Any] | list[Any]) -> bool:
    """Whether any map, at any depth, has a key with a dot. Runs per record: a map's names are
    searched in one joined string, and only maps and lists are visited."""
    if type(value) is dict:
        if "." in "".join(value):
            return True
        children: Any = value.values()
    else:
        children = value
    for item in children:
        kind = type(item)
        if (kind is dict or kind is list) and _has_dotted_name(item):
            return True
    return False


def _collision(document: dict[str, Any], prefix: tuple[str, ...], kinds: dict[tuple[str, ...], str]) -> str | None:
    """The first field path two names define differently (a value twice, or a value and an
    object); ``kinds`` maps each path seen to "object" or "value". Lists are left to the
    cluster: it flattens their objects into one field anyway."""
    for name, value in document.items():
        parts = tuple(name.split("."))
        for depth in range(1, len(parts)):
            implied = prefix + parts[:depth]
            if kinds.setdefault(implied, "object") != "object":
                return f"colliding: the attribute {name!r} makes {'.'.join(implied)!r} an object and a value"
        path = prefix + parts
        kind = "object" if isinstance(value, dict) else "value"
        if path in kinds and (kind == "value" or kinds[path] == "value"):
            return f"colliding: the attribute {name!r} names the field {'.'.join(path)!r} that another attribute also names"
        kinds[path] = kind
        if isinstance(value, dict):
            found = _collision(value, path, kinds)
            if found:
                return found
    return None


def upsert(alias: str, doc_id: str, image: Any, sequence: int, position: int = 0, at: int | None = None,
           read: int | None = None) -> Change:
    """The change that makes ``doc_id`` hold ``image`` (DynamoDB JSON), as of ``sequence``
    (``read``: when the image was read from the table, for a table state)."""
    document = document_of(image)
    document[RESERVED_FIELD] = _bookkeeping(sequence, at, read)
    return Change(alias, doc_id, sequence, False, _json(document), position, at=at, read=read)


def tombstone(alias: str, doc_id: str, sequence: int, position: int = 0, at: int | None = None,
              read: int | None = None) -> Change:
    """The change that deletes ``doc_id`` as of ``sequence``, remembering it with a tombstone."""
    bookkeeping = _bookkeeping(sequence, at, read)
    bookkeeping["deleted"] = True
    return Change(alias, doc_id, sequence, True, _json({RESERVED_FIELD: bookkeeping}), position, at=at, read=read)


def _json(source: dict[str, Any]) -> bytes:
    try:
        return dumps_to_keep(source)
    except orjson.JSONEncodeError as exc:  # e.g. a lone surrogate in a string
        raise RecordError("unconvertible_value", f"the item cannot be written as JSON: {exc}") from exc


def records_of(event: Any) -> list[Any]:
    """The event's ``Records`` list; raises :class:`RecordError` for an event without one."""
    if type(event) is not dict:
        raise malformed(f"the event must be an object, got {type(event).__name__}")
    records = event.get("Records")
    if records is None:
        raise malformed("the event has no 'Records' list")
    if type(records) is not list:
        raise malformed(f"the event's 'Records' must be a list, got {type(records).__name__}")
    return records


def collapse(changes: list[Change]) -> tuple[list[Change], int]:
    """The last change per document (highest sequence), and how many records it superseded.

    Fewer bulk actions and no self-conflicts inside one batch. Ordering by sequence rather than
    by position keeps this right for batches that mix records from several deliveries (redrive).
    """
    latest: dict[tuple[str, str], Change] = {}
    superseded = 0
    for change in changes:
        key = (change.alias, change.doc_id)
        kept = latest.get(key)
        if kept is None:
            latest[key] = change
            continue
        superseded += 1
        winner, loser = (change, kept) if change.sequence > kept.sequence else (kept, change)
        winner.covers = sorted(winner.covers + loser.covers)
        latest[key] = winner
    return list(latest.values()), superseded


def newest_changes(heads: list[Head]) -> tuple[list[Change], dict[int, RecordError], int]:
    """Per document, the change of its newest record whose image converts; the records whose
    image did not convert (position → why); and how many records the kept changes superseded.

    Collapsing comes first and only the winners are converted: on a hot shard most records
    are superseded inside their batch, and their conversion would be thrown away. A record is
    superseded — counted, never converted, never dead-lettered — when a newer record of the
    same document converts, even if its own image is malformed: the index only ever holds
    the newest image, the older one could not land (the guard keeps the newer), and its
    redrive would be skipped as stale, so a dead letter would carry nothing to act on.
    When the newest record's image does not convert, it is dead-lettered and the next newest
    is tried, as before collapsing came first: the newest convertible record is written.
    Ties (the same record delivered twice) keep the earliest position, as :func:`collapse`.
    """
    return newest_converted(newest_first(heads))


def newest_first(heads: list[Head]) -> list[list[Head]]:
    """The heads grouped per document, each group newest first (ties: earliest position first)."""
    by_document: dict[tuple[str, str], list[Head]] = {}
    for head in heads:
        key = (head.alias, head.doc_id)
        same = by_document.get(key)
        if same is None:
            by_document[key] = [head]
        else:
            same.append(head)
    groups = list(by_document.values())
    for same in groups:
        if len(same) > 1:
            same.sort(key=lambda head: (-head.sequence, head.position))
    return groups


def newest_converted(groups: list[list[Head]]) -> tuple[list[Change], dict[int, RecordError], int]:
    """:func:`newest_changes` for heads already grouped by :func:`newest_first`."""
    changes: list[Change] = []
    errors: dict[int, RecordError] = {}
    superseded = 0
    for same in groups:
        for tried, head in enumerate(same):
            try:
                change = change_from(head)
            except RecordError as error:
                errors[head.position] = error
                continue
            if tried + 1 < len(same):
                change.covers = sorted(older.position for older in same[tried:])
                superseded += len(same) - tried - 1
            changes.append(change)
            break
    return changes, errors, superseded
