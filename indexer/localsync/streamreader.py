"""The DynamoDB Streams API as local sync reads it: a table's stream, its shards, and records
reshaped as Lambda delivers them. Works on whatever endpoint boto3 is pointed at
(``AWS_ENDPOINT_URL``: moto server, DynamoDB Local, or AWS).

Errors at startup become one-line :class:`SettingsError` s naming the table or endpoint; while
running, connection trouble is :class:`RetryableError` (the caller waits and reads again).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterator, Protocol

import structlog

from .checkpoints import TRIM_HORIZON
from .. import aws
from ..errors import IndexerError, RetryableError, SettingsError, StreamGone
from .esm import StreamRecord
from .shards import Shard, shard_of
from .streams import lambda_record

log = structlog.get_logger("indexer.localsync.streamreader")

#: GetRecords returns at most this many records per call.
MAX_READ = 1000
_TRANSIENT_CODES = {
    "ThrottlingException", "LimitExceededException", "InternalServerError",
    "ServiceUnavailable", "RequestLimitExceeded", "ProvisionedThroughputExceededException",
}


class StreamsApi(Protocol):
    """The three Streams calls local sync makes (a boto3 ``dynamodbstreams`` client)."""

    def describe_stream(self, **kwargs: Any) -> dict[str, Any]: ...
    def get_shard_iterator(self, **kwargs: Any) -> dict[str, Any]: ...
    def get_records(self, **kwargs: Any) -> dict[str, Any]: ...


def aws_client(service: str) -> Any:
    """A boto3 client that fails fast on an unreachable endpoint instead of retrying for minutes."""
    with aws_errors(service):
        return aws.client(service, max_attempts=3)


def endpoint_of(client: Any) -> str:
    return str(getattr(getattr(client, "meta", None), "endpoint_url", "AWS"))


@contextmanager
def aws_errors(what: str, client: Any = None) -> Iterator[None]:
    """Turn startup failures into one-line :class:`SettingsError` s that say what to check."""
    from botocore.exceptions import (
        ClientError, HTTPClientError, NoCredentialsError, NoRegionError, PartialCredentialsError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError

    where = endpoint_of(client) if client is not None else "the AWS endpoint"
    try:
        yield
    except NoRegionError:
        raise SettingsError("AWS_DEFAULT_REGION is not set: set it (e.g. us-east-1) or configure a profile") from None
    except (NoCredentialsError, PartialCredentialsError):
        raise SettingsError("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (any values for moto)") from None
    except (BotoConnectionError, HTTPClientError) as exc:
        raise SettingsError(f"cannot reach {what} at {where}: {exc}; check AWS_ENDPOINT_URL") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise SettingsError(f"{what} at {where} refused the request: {error.get('Code')}: {error.get('Message')}") from None


def open_stream(dynamodb: Any, table: str) -> tuple[str, str]:
    """The table's current stream ARN and view type; a clear error when there is none."""
    from botocore.exceptions import ClientError

    with aws_errors("DynamoDB", dynamodb):
        try:
            description = dynamodb.describe_table(TableName=table)["Table"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            raise SettingsError(
                f"table {table!r} does not exist at {endpoint_of(dynamodb)}: check --table (or TABLE_NAME) and AWS_ENDPOINT_URL"
            ) from None
    spec = description.get("StreamSpecification") or {}
    arn = description.get("LatestStreamArn")
    if not spec.get("StreamEnabled") or not arn:
        raise SettingsError(
            f"table {table!r} has no stream: enable one with StreamViewType NEW_AND_OLD_IMAGES (or NEW_IMAGE)"
        )
    return str(arn), str(spec.get("StreamViewType", ""))


def describe_shards(streams: StreamsApi, stream_arn: str) -> list[Shard]:
    """Every shard the stream lists (DescribeStream pages through them)."""
    shards: list[Shard] = []
    start: str | None = None
    while True:
        request: dict[str, Any] = {"StreamArn": stream_arn}
        if start:
            request["ExclusiveStartShardId"] = start
        description = _call(streams.describe_stream, **request)["StreamDescription"]
        shards.extend(shard_of(item) for item in description.get("Shards", []))
        start = description.get("LastEvaluatedShardId")
        if not start:
            return shards


def region_of(arn: str) -> str:
    parts = arn.split(":")
    return parts[3] if len(parts) > 4 else ""


def account_of(arn: str) -> str:
    parts = arn.split(":")
    return parts[4] if len(parts) > 4 else ""


def stream_record(record: dict[str, Any], stream_arn: str) -> StreamRecord:
    """A ``GetRecords`` record as the function will receive it."""
    shaped = lambda_record(record, stream_arn)
    shaped.setdefault("awsRegion", region_of(stream_arn))
    stream = record.get("dynamodb") or {}
    return StreamRecord(
        sequence=str(stream.get("SequenceNumber", "")),
        arrival=stream.get("ApproximateCreationDateTime"),
        text=json.dumps(shaped, ensure_ascii=False, separators=(",", ":")),
    )


class ShardReader:
    """Reads one shard forward from a position, through shard iterators it renews as needed."""

    def __init__(self, streams: StreamsApi, stream_arn: str, shard_id: str, after: str | None, start: str) -> None:
        self.streams = streams
        self.stream_arn = stream_arn
        self.shard_id = shard_id
        #: The last sequence number read; reading resumes after it.
        self.after = after
        self.start = start
        self.iterator: str | None = None
        #: The shard is closed and read to its end.
        self.closed = False

    def _new_iterator(self) -> str | None:
        request: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": self.shard_id}
        if self.after is not None:
            request.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=self.after)
        else:
            request["ShardIteratorType"] = self.start
        return _call(self.streams.get_shard_iterator, **request).get("ShardIterator")

    def take_iterator(self) -> None:
        """Take a shard iterator now if there is none (for ``LATEST``, "now" is this call)."""
        if self.iterator is None and not self.closed:
            with self._errors():
                self.iterator = self._new_iterator()
            if self.iterator is None:
                self.closed = True

    def read(self, limit: int) -> list[StreamRecord]:
        """The next records (up to ``limit``); marks the reader closed at a closed shard's end."""
        self.take_iterator()
        if self.closed:
            return []
        with self._errors():
            got = _call(self.streams.get_records, ShardIterator=self.iterator, Limit=min(limit, MAX_READ))
        records = [stream_record(record, self.stream_arn) for record in got.get("Records", [])]
        if records:
            self.after = records[-1].sequence
        self.iterator = got.get("NextShardIterator")
        if self.iterator is None:
            self.closed = True
        return records

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """What a failed Streams call means for this reader."""
        from botocore.exceptions import ClientError

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code")
            self.iterator = None
            if code == "ExpiredIteratorException":
                raise RetryableError(f"shard iterator of {self.shard_id} expired; renewing it") from None
            if code == "TrimmedDataAccessException":
                # The records after our position are gone (older than 24 h): nothing can bring
                # them back from the stream; a full replay can.
                log.error("records_trimmed", shard_id=self.shard_id, after=self.after,
                          advice="records were lost from the stream: run python -m replay --full")
                self.after, self.start = None, TRIM_HORIZON
                raise RetryableError(f"records of {self.shard_id} were trimmed; restarting at TRIM_HORIZON") from None
            if code == "ResourceNotFoundException":
                raise StreamGone(f"stream {self.stream_arn} no longer exists (table deleted or stream disabled)") from None
            raise IndexerError(f"reading {self.shard_id} failed: {code}: {error.get('Message')}") from None


def _call(method: Any, **kwargs: Any) -> dict[str, Any]:
    """One Streams call; connection trouble and throttling become :class:`RetryableError`."""
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    try:
        return method(**kwargs)
    except (BotoConnectionError, HTTPClientError) as exc:
        raise RetryableError(f"cannot reach DynamoDB Streams: {exc}") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if error.get("Code") in _TRANSIENT_CODES or status >= 500:
            raise RetryableError(f"DynamoDB Streams: {error.get('Code')}: {error.get('Message')}") from None
        raise
