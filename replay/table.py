"""The DynamoDB adapter for replay and verify: describe the table, scan it in parallel, read items.

Scans are strongly consistent: the rebuild protocol relies on a scan seeing every write that
happened before it read the page, and verify must not report drift that a replica lag invented.
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import structlog
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential, wait_random

from indexer import aws
from indexer.errors import RecordError, SettingsError, TableNotFound
from indexer.ids import document_id

log = structlog.get_logger("replay.table")

#: Parallel scan segments when the flags say nothing (--full, --verify).
DEFAULT_SEGMENTS = 4
THROTTLING = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
)


@dataclass(frozen=True)
class TableInfo:
    name: str
    #: Key attribute names, partition key first.
    key_names: tuple[str, ...]
    #: Key attribute types by name ("S", "N" or "B").
    key_types: dict[str, str]
    stream_arn: str | None
    stream_view: str | None
    item_count: int

    def keys_of(self, item: dict[str, Any]) -> dict[str, Any]:
        """The ``Keys`` map of an item, as a stream record would carry it."""
        return {name: item[name] for name in self.key_names}


def client() -> Any:
    """A DynamoDB client that backs off on throttling by itself (adaptive retry mode)."""
    return aws.client("dynamodb", max_attempts=10, adaptive=True)


def describe(dynamodb: Any, name: str) -> TableInfo:
    """What replay needs to know about the table; TableNotFound when there is none."""
    from botocore.exceptions import ClientError, EndpointConnectionError

    try:
        table = dynamodb.describe_table(TableName=name)["Table"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            raise TableNotFound(
                f"table {name!r} does not exist (TABLE_NAME / --table; AWS_ENDPOINT_URL selects where to look)"
            ) from None
        raise SettingsError(f"cannot describe table {name!r}: {exc}") from None
    except EndpointConnectionError as exc:
        raise SettingsError(f"cannot reach DynamoDB: {exc} (check AWS_ENDPOINT_URL / region)") from None
    schema = sorted(table["KeySchema"], key=lambda key: key["KeyType"] != "HASH")
    types = {d["AttributeName"]: d["AttributeType"] for d in table.get("AttributeDefinitions", [])}
    stream = table.get("StreamSpecification") or {}
    return TableInfo(
        name=name,
        key_names=tuple(key["AttributeName"] for key in schema),
        key_types={key["AttributeName"]: types.get(key["AttributeName"], "S") for key in schema},
        stream_arn=table.get("LatestStreamArn") if stream.get("StreamEnabled") else None,
        stream_view=stream.get("StreamViewType") if stream.get("StreamEnabled") else None,
        item_count=int(table.get("ItemCount", 0)),
    )


class RateLimiter:
    """Shared across scan segments: at most ``rate`` items per second in total."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = clock()

    def take(self, items: int) -> None:
        """Wait until ``items`` more items may be read."""
        if not self.rate or items <= 0:
            return
        with self._lock:
            now = self._clock()
            start = max(self._next, now)
            self._next = start + items / self.rate
            delay = start - now
        if delay > 0:
            self._sleep(delay)


def _throttled(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and exc.response["Error"]["Code"] in THROTTLING


def scan_pages(
    dynamodb: Any,
    table: str,
    segment: int,
    segments: int,
    page_size: int,
    limiter: RateLimiter,
    stop: threading.Event,
    start_key: dict[str, Any] | None = None,
) -> Iterator[tuple[list[dict[str, Any]], dict[str, Any] | None]]:
    """(items, key to resume after them or None at the end) per page of one segment, from
    ``start_key``; consistent reads, throttling absorbed."""
    retrying = Retrying(
        retry=retry_if_exception(_throttled),
        stop=stop_after_attempt(20),
        wait=wait_exponential(multiplier=0.5, max=20) + wait_random(0, 1),
        reraise=True,
        before_sleep=lambda state: log.warning("scan_throttled", segment=segment, attempt=state.attempt_number),
    )
    request: dict[str, Any] = {
        "TableName": table,
        "Segment": segment,
        "TotalSegments": segments,
        "ConsistentRead": True,
        "Limit": page_size,
    }
    if start_key:
        request["ExclusiveStartKey"] = start_key
    while not stop.is_set():
        limiter.take(page_size)
        page = retrying(dynamodb.scan, **request)
        last = page.get("LastEvaluatedKey")
        yield page.get("Items", []), last or None
        if not last:
            return
        request["ExclusiveStartKey"] = last


def get_item(dynamodb: Any, table: str, keys: dict[str, Any]) -> dict[str, Any] | None:
    """The item's current image (consistent read), or None when it does not exist."""
    return dynamodb.get_item(TableName=table, Key=keys, ConsistentRead=True).get("Item")


def _keys_from_document(table: TableInfo, source: Mapping[str, Any]) -> dict[str, Any] | None:
    """The item key a document claims, in DynamoDB JSON (to read the item back)."""
    keys: dict[str, Any] = {}
    for name in table.key_names:
        if name not in source:
            return None
        value, kind = source[name], table.key_types[name]
        if kind == "N":
            keys[name] = {"N": str(value)}
        elif kind == "B":
            keys[name] = {"B": base64.b64decode(value)}
        else:
            keys[name] = {"S": value}
    return keys


def keys_claimed(table: TableInfo, doc_id: str, source: Mapping[str, Any]) -> dict[str, Any] | None:
    """The item key a document claims, only when the document sits under that key's id: a
    document under any other id is extra whatever its content says, and its claimed item must
    be neither compared with it nor written into it."""
    try:
        keys = _keys_from_document(table, source)
        return keys if keys is not None and document_id(keys) == doc_id else None
    except (RecordError, ValueError, TypeError):
        return None
