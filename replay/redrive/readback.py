"""Reading records back for redrive: a range of a shard from the stream, an item from the table.

Lambda's on-failure messages carry no records, only where they were in the stream, and the
handler drops a record's images when they do not fit SQS; both are completed here. Records
come back in the shape Lambda delivers (``indexer.localsync.streams.lambda_record``), so they take the
handler's one path from there on.
"""

from __future__ import annotations

from typing import Any, Callable

from indexer import aws
from indexer.errors import RangeGone, ReadbackFailed, TableMissing
from indexer.lambdashape import lambda_record
from indexer.tablestate import boto_keys, region_of as _region, table_state_record

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
#: Upper bound on ``DescribeStream`` pages (100 shards each) read to find a record's shard.
MAX_SHARD_PAGES = 50
#: Shards whose range may hold one sequence number that are read to find it (normally one).
MAX_CANDIDATE_SHARDS = 4
#: What ``held_record`` answers for a sequence number below every shard the stream still has:
#: the record was trimmed (older than 24 hours), so every change still to come is newer.
OLDER_THAN_STREAM = "older than the stream"


class Readback:
    """Reads from DynamoDB and DynamoDB Streams, one lazily built client per service and region
    (the region is the one in the stream or table ARN, so a queue may serve several regions)."""

    def __init__(self, client_factory: Callable[[str, str | None], Any] = aws.client) -> None:
        self._factory = client_factory
        self._clients: dict[tuple[str, str | None], Any] = {}
        self._shard_cache: dict[str, list[tuple[str, int, int | None]] | None] = {}

    def _client(self, service: str, region: str | None) -> Any:
        key = (service, region)
        if key not in self._clients:
            self._clients[key] = self._factory(service, region)
        return self._clients[key]

    def table_arn(self, table: str) -> str | None:
        """The table's ARN where boto3 points (its account and region), or None when there is
        no such table. Raises :class:`ReadbackFailed` when DynamoDB cannot be asked."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self._client("dynamodb", None).describe_table(TableName=table)["Table"]["TableArn"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise ReadbackFailed(f"describing table {table!r}: {exc}") from exc
        except BotoCoreError as exc:
            raise ReadbackFailed(f"describing table {table!r}: {exc}") from exc

    def held_record(self, stream_arn: str, sequence: int) -> dict[str, Any] | str | None:
        """The stream's own record at ``sequence`` (Lambda-shaped); :data:`OLDER_THAN_STREAM`
        when the number is below every shard the stream still has; None when the stream does
        not hold it although it should (a forged number, or a stream that is gone).

        Why: a dead letter's sequence number labels what redrive writes, and a number higher
        than any the stream will ever give would make every later change of the item look
        stale. Only the stream can vouch for it."""
        from botocore.exceptions import BotoCoreError, ClientError

        streams = self._client("dynamodbstreams", _region(stream_arn))
        try:
            shards = self._shards(streams, stream_arn)
            if shards is None or not shards:
                return None
            if sequence < min(start for _, start, _ in shards):
                return OLDER_THAN_STREAM
            candidates = [shard for shard, start, end in shards
                          if start <= sequence and (end is None or sequence <= end)]
            for shard in candidates[:MAX_CANDIDATE_SHARDS]:
                try:
                    iterator = streams.get_shard_iterator(
                        StreamArn=stream_arn, ShardId=shard, ShardIteratorType="AT_SEQUENCE_NUMBER",
                        SequenceNumber=str(sequence))["ShardIterator"]
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code", "") in GONE_CODES:
                        continue
                    raise
                got = streams.get_records(ShardIterator=iterator, Limit=1).get("Records", []) if iterator else []
                if got and got[0].get("dynamodb", {}).get("SequenceNumber") == str(sequence):
                    return lambda_record(got[0], stream_arn)
            return None
        except ClientError as exc:
            raise ReadbackFailed(f"checking sequence number {sequence} against the stream: {exc}") from exc
        except BotoCoreError as exc:
            raise ReadbackFailed(f"checking sequence number {sequence} against the stream: {exc}") from exc

    def _shards(self, streams: Any, stream_arn: str) -> list[tuple[str, int, int | None]] | None:
        """Every shard of the stream with its sequence range (cached for the run); None when
        the stream does not exist."""
        from botocore.exceptions import ClientError

        if stream_arn not in self._shard_cache:
            shards: list[tuple[str, int, int | None]] = []
            request: dict[str, Any] = {"StreamArn": stream_arn, "Limit": 100}
            try:
                for _ in range(MAX_SHARD_PAGES):
                    description = streams.describe_stream(**request)["StreamDescription"]
                    for shard in description.get("Shards", []):
                        numbers = shard.get("SequenceNumberRange", {})
                        end = numbers.get("EndingSequenceNumber")
                        shards.append((shard["ShardId"], int(numbers.get("StartingSequenceNumber", "0")),
                                       int(end) if end is not None else None))
                    last = description.get("LastEvaluatedShardId")
                    if not last:
                        break
                    request["ExclusiveStartShardId"] = last
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                    raise
                self._shard_cache[stream_arn] = None
                return None
            self._shard_cache[stream_arn] = shards
        return self._shard_cache[stream_arn]

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
        return table_state_record(record, item)

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
