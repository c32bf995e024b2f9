"""Reading records back for redrive: a range of a shard from the stream, an item from the table.

Lambda's on-failure messages carry no records, only where they were in the stream, and the
handler drops a record's images when they do not fit SQS; both are completed here. Records
come back in the shape Lambda delivers (``indexer.localsync.streams.lambda_record``), so they take the
handler's one path from there on.
"""

from __future__ import annotations

import base64
from typing import Any, Callable

from indexer import aws
from indexer.errors import RangeGone, ReadbackFailed, TableMissing
from indexer.records import table_of
from indexer.localsync.streams import lambda_record

#: Errors that mean the range cannot be read any more: trimmed past the stream's 24-hour
#: retention, or the shard, stream or table no longer exists. ``ValidationException`` is what
#: DynamoDB Streams answers for a sequence number the shard does not hold.
GONE_CODES = frozenset(
    {"TrimmedDataAccessException", "ResourceNotFoundException", "ExpiredIteratorException", "ValidationException"}
)
#: ``GetRecords`` pages in a row without a record before giving up on reaching the range's end.
MAX_EMPTY_PAGES = 3
#: Upper bound on pages read for one range (a batch is at most 10,000 records).
MAX_PAGES = 200


def _region(arn: str | None) -> str | None:
    if isinstance(arn, str) and arn.startswith("arn:"):
        parts = arn.split(":")
        if len(parts) > 3 and parts[3]:
            return parts[3]
    return None


def boto_keys(keys: dict[str, Any]) -> dict[str, Any]:
    """A record's ``Keys`` (Lambda's JSON: binary as base64 text) as boto3 takes them (bytes)."""
    converted: dict[str, Any] = {}
    for name, value in keys.items():
        if isinstance(value, dict) and set(value) == {"B"} and isinstance(value["B"], str):
            converted[name] = {"B": base64.b64decode(value["B"])}
        else:
            converted[name] = value
    return converted


class Readback:
    """Reads from DynamoDB and DynamoDB Streams, one lazily built client per service and region
    (the region is the one in the stream or table ARN, so a queue may serve several regions)."""

    def __init__(self, client_factory: Callable[[str, str | None], Any] = aws.client) -> None:
        self._factory = client_factory
        self._clients: dict[tuple[str, str | None], Any] = {}

    def _client(self, service: str, region: str | None) -> Any:
        key = (service, region)
        if key not in self._clients:
            self._clients[key] = self._factory(service, region)
        return self._clients[key]

    def item_record(self, record: dict[str, Any], table: str, table_arn: str | None) -> dict[str, Any]:
        """``record`` completed from the table: its current item (consistent read) as the new
        image, or a REMOVE when the item no longer exists, under the record's own sequence
        number."""
        from botocore.exceptions import BotoCoreError, ClientError

        stream = record["dynamodb"]
        try:
            item = self._client("dynamodb", _region(table_arn)).get_item(
                TableName=table, Key=boto_keys(stream["Keys"]), ConsistentRead=True
            ).get("Item")
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                raise TableMissing(f"table {table!r} does not exist") from exc
            raise ReadbackFailed(f"reading the item from table {table!r}: {exc}") from exc
        except BotoCoreError as exc:
            raise ReadbackFailed(f"reading the item from table {table!r}: {exc}") from exc
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

    def stream_range(self, stream_arn: str, shard_id: str, start: str, end: str) -> list[dict[str, Any]]:
        """The records of ``shard_id`` from ``start`` to ``end`` (inclusive), Lambda-shaped.

        Raises :class:`RangeGone` when they are no longer readable, :class:`ReadbackFailed`
        for anything else (the caller's report names the shard and range)."""
        from botocore.exceptions import BotoCoreError, ClientError

        streams = self._client("dynamodbstreams", _region(stream_arn))
        first, last = int(start), int(end)
        records: list[dict[str, Any]] = []
        try:
            iterator = streams.get_shard_iterator(
                StreamArn=stream_arn, ShardId=shard_id, ShardIteratorType="AT_SEQUENCE_NUMBER", SequenceNumber=start
            )["ShardIterator"]
            empty = 0
            for _ in range(MAX_PAGES):
                if not iterator:
                    break  # the shard is closed and read to its end
                page = streams.get_records(ShardIterator=iterator, Limit=1000)
                got = page.get("Records", [])
                empty = 0 if got else empty + 1
                for record in got:
                    sequence = int(record["dynamodb"]["SequenceNumber"])
                    if sequence > last:
                        return records
                    if sequence >= first:
                        records.append(lambda_record(record, stream_arn))
                        if sequence == last:
                            return records
                if empty >= MAX_EMPTY_PAGES:
                    break
                iterator = page.get("NextShardIterator")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in GONE_CODES:
                raise RangeGone(f"{code}: {exc.response.get('Error', {}).get('Message', '')}") from exc
            raise ReadbackFailed(f"reading the stream: {exc}") from exc
        except BotoCoreError as exc:
            raise ReadbackFailed(f"reading the stream: {exc}") from exc
        read = f"read {len(records)} record(s), up to {records[-1]['dynamodb']['SequenceNumber']}" if records else "read none"
        raise RangeGone(f"the stream no longer holds the whole range ({read})")


def table_for(record: dict[str, Any], table_name: str | None) -> str | None:
    """The table to read an item back from: TABLE_NAME when set (an explicit choice wins),
    else the table named in the record's ``eventSourceARN``."""
    return table_name or table_of(record.get("eventSourceARN"))
