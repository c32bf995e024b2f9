"""The item's present state read from its table, for records the snapshot rule cannot judge by time.

A record made within the margin around a rebuilt index's scan start may be older or newer than
the snapshot it would replace (indexer/actions.py, ``needs_table_state``). The handler then
reads the item with a consistent read and writes what the table holds now — the item, or a
tombstone when it is gone — under the record's own sequence, as redrive does: the present is
never older than the record nor than the snapshot, and every later record still wins over it.

The read is one ``BatchGetItem`` per table and region for all such records of a batch (100
keys a request), built lazily: most batches never call it, and boto3 costs a quarter of a
second to import. A read that fails raises :class:`ReadbackFailed`; the caller reports those
records to Lambda, which delivers them again — never applied as they were, never dropped.
"""

from __future__ import annotations

import base64
import re
import time
from typing import Any, Callable

import structlog

from . import aws
from .errors import ReadbackFailed, RecordError
from .ids import document_id
from .lambdashape import json_safe, lambda_record
from .records import Change, change_from, head_of, table_of

log = structlog.get_logger("indexer.tablestate")

#: Keys one ``BatchGetItem`` request may ask for.
MAX_KEYS = 100
#: Requests in a row for keys DynamoDB left unprocessed (throttling, the 16 MB answer limit).
MAX_ROUNDS = 5
#: First wait before asking again for unprocessed keys, doubled each round.
FIRST_WAIT = 0.05
#: What DynamoDB accepts as a table name, and what AWS region names look like: an ARN that
#: holds anything else names no table this handler may read (and would fail in botocore).
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}")


def boto_keys(keys: dict[str, Any]) -> dict[str, Any]:
    """A record's ``Keys`` (Lambda's JSON: binary as base64 text) as boto3 takes them (bytes)."""
    converted: dict[str, Any] = {}
    for name, value in keys.items():
        if isinstance(value, dict) and set(value) == {"B"} and isinstance(value["B"], str):
            converted[name] = {"B": base64.b64decode(value["B"])}
        else:
            converted[name] = value
    return converted


def region_of(arn: Any) -> str | None:
    """The region in an ARN, or None (boto3's configured region is used then)."""
    if isinstance(arn, str) and arn.startswith("arn:"):
        parts = arn.split(":")
        if len(parts) > 3 and parts[3]:
            return parts[3]
    return None


def table_to_read(arn: Any) -> tuple[str, str | None] | None:
    """(table name, region) named by a stream record's ``eventSourceARN``, or None when it
    names no valid DynamoDB table."""
    table, region = table_of(arn), region_of(arn)
    if table is None or not _TABLE_NAME.fullmatch(table):
        return None
    if region is not None and not _REGION.fullmatch(region):
        return None
    return table, region


def table_state_record(record: dict[str, Any], item: dict[str, Any] | None) -> dict[str, Any]:
    """``record`` completed from the table, Lambda-shaped: ``item`` (the present item, as boto3
    returns it) as a MODIFY's new image, or a REMOVE when the item is gone; same keys, same
    sequence number, same ARN. Shared by the handler and redrive."""
    stream = record["dynamodb"]
    completed = {key: value for key, value in stream.items() if key not in ("NewImage", "OldImage")}
    if item is None:
        event_name = "REMOVE"
    else:
        event_name = "MODIFY"
        completed["NewImage"] = item
    arn = record.get("eventSourceARN")
    shaped = lambda_record({**record, "eventName": event_name, "dynamodb": completed}, arn if isinstance(arn, str) else "")
    if not isinstance(arn, str):
        del shaped["eventSourceARN"]
    return shaped


def table_state_change(original: Change, record: dict[str, Any], item: dict[str, Any] | None, read: int) -> Change:
    """The change that writes the table's present state (read at ``read``, ms) in place of
    ``original``: its sequence, its document, the records it stands for. Raises
    :class:`RecordError` when the present item cannot be indexed."""
    change = change_from(head_of(table_state_record(record, item), original.position, original.alias), read)
    change.covers = original.covers
    change.table_state = True
    return change


class TableReader:
    """Consistent reads of items from the tables named by stream records' ARNs."""

    def __init__(self, client_factory: Callable[[str | None], Any] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._factory = client_factory or _default_client
        self._clients: dict[str | None, Any] = {}
        self._sleep = sleep
        #: ``BatchGetItem`` requests sent (tests and the benchmark count them).
        self.requests = 0

    def _client(self, region: str | None) -> Any:
        if region not in self._clients:
            self._clients[region] = self._factory(region)
        return self._clients[region]

    def items(self, table: str, region: str | None, keys: list[dict[str, Any]],
              remaining: Callable[[], float]) -> dict[str, dict[str, Any] | None]:
        """Document id → the item (None when gone) for each of ``keys`` (Lambda's JSON), read
        with ``ConsistentRead``. Raises :class:`ReadbackFailed` when any cannot be read in the
        time ``remaining()`` leaves."""
        by_id = {document_id(key): key for key in keys}
        found: dict[str, dict[str, Any] | None] = {doc_id: None for doc_id in by_id}
        ids = list(by_id)
        for start in range(0, len(ids), MAX_KEYS):
            names = list(by_id[ids[start]])
            pending = [boto_keys(by_id[doc_id]) for doc_id in ids[start:start + MAX_KEYS]]
            for round_ in range(MAX_ROUNDS):
                items, pending = self._request(table, region, pending)
                for item in items:
                    doc_id = document_id(json_safe({name: item.get(name) for name in names}))
                    if doc_id in found:
                        found[doc_id] = item
                wait = FIRST_WAIT * 2 ** round_
                if not pending or round_ + 1 == MAX_ROUNDS or remaining() < wait + 1.0:
                    break
                self._sleep(wait)
            if pending:
                raise ReadbackFailed(f"table {table!r} left {len(pending)} key(s) unread (throttled)")
        return found

    def _request(self, table: str, region: str | None,
                 keys: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """One ``BatchGetItem``: the items it returned, and the keys DynamoDB left for later."""
        from botocore.exceptions import BotoCoreError, ClientError

        self.requests += 1
        try:
            answer = self._client(region).batch_get_item(
                RequestItems={table: {"Keys": keys, "ConsistentRead": True}})
        except (BotoCoreError, ClientError) as exc:
            raise ReadbackFailed(f"reading {len(keys)} item(s) from table {table!r}: {exc}") from exc
        unprocessed = (answer.get("UnprocessedKeys") or {}).get(table, {}).get("Keys", [])
        return list((answer.get("Responses") or {}).get(table, [])), list(unprocessed)


def read_back(reader: TableReader, records: list[Any], changes: list[Change], remaining: Callable[[], float],
              clock: Callable[[], float] = time.time) -> dict[tuple[str, str], Change | RecordError]:
    """(alias, document id) → the table-state change for each of ``changes``, or why it
    cannot have one (a record whose ARN names no table). Raises :class:`ReadbackFailed`."""
    started = time.perf_counter()
    # Taken before the reads are sent: what they return is at least this recent.
    read = int(clock() * 1000)
    out: dict[tuple[str, str], Change | RecordError] = {}
    wanted: dict[tuple[str, str | None], list[Change]] = {}
    for change in changes:
        record = records[change.position]
        arn = record.get("eventSourceARN")
        named = table_to_read(arn)
        if named is None:
            out[(change.alias, change.doc_id)] = RecordError(
                "no_table_to_read", "the record was made around a rebuild's scan start and must be "
                f"checked against its table, but its eventSourceARN names none ({str(arn)[:120]!r})")
            continue
        wanted.setdefault(named, []).append(change)
    for (table, region), group in wanted.items():
        items = reader.items(table, region, [records[c.position]["dynamodb"]["Keys"] for c in group], remaining)
        for change in group:
            try:
                out[(change.alias, change.doc_id)] = table_state_change(
                    change, records[change.position], items.get(change.doc_id), read)
            except RecordError as error:
                out[(change.alias, change.doc_id)] = error
    log.info("table_states_read", count=len(changes), tables=len(wanted),
             ms=round((time.perf_counter() - started) * 1000, 1))
    return out


def _default_client(region: str | None) -> Any:
    # Inside a Lambda invocation: few attempts and a short timeout, so a throttled table
    # leaves time to report the records as failed (Lambda then delivers them again).
    return aws.client("dynamodb", region, read_timeout=5, max_attempts=3)
