"""Lambda's event source mapping for DynamoDB Streams, as pure decisions: no clients, no clock.

What a batch is, how a function's answer is judged, what is retried, split or discarded, and the
message an on-failure destination receives. ``indexer.localsync.sync`` drives these against a real
stream; the tests check every rule here without I/O. The rules follow AWS's documentation:
https://docs.aws.amazon.com/lambda/latest/dg/services-ddb-params.html,
https://docs.aws.amazon.com/lambda/latest/dg/services-ddb-batchfailurereporting.html.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

#: Lambda's defaults and limits for a DynamoDB stream mapping.
BATCH_SIZE, MAX_BATCH_SIZE = 100, 10_000
MAX_BATCHING_WINDOW = 300
MAX_RETRY_ATTEMPTS = 10_000
MIN_RECORD_AGE, MAX_RECORD_AGE = 60, 604_800
#: The largest synchronous invocation payload Lambda accepts.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024

RETRIES_EXHAUSTED = "RetryAttemptsExhausted"
RECORD_AGE_EXCEEDED = "RecordAgeExceeded"


@dataclass(frozen=True)
class MappingConfig:
    """The event source mapping settings that shape delivery (Lambda's names, Lambda's defaults,
    except ``report_batch_item_failures``: on here because this project's handler speaks it)."""

    batch_size: int = BATCH_SIZE
    maximum_batching_window: float = 0.0
    report_batch_item_failures: bool = True
    bisect_batch_on_function_error: bool = False
    #: -1: retry until the record leaves the stream.
    maximum_retry_attempts: int = -1
    #: Seconds; -1: no limit.
    maximum_record_age: int = -1

    def problem(self) -> str | None:
        """Why Lambda would refuse these settings (naming the CLI flag), or None."""
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            return f"--batch-size must be between 1 and {MAX_BATCH_SIZE}, got {self.batch_size}"
        if not 0 <= self.maximum_batching_window <= MAX_BATCHING_WINDOW:
            return (f"--maximum-batching-window must be between 0 and {MAX_BATCHING_WINDOW} seconds, "
                    f"got {self.maximum_batching_window:g}")
        if not -1 <= self.maximum_retry_attempts <= MAX_RETRY_ATTEMPTS:
            return (f"--maximum-retry-attempts must be -1 (infinite) or 0 to {MAX_RETRY_ATTEMPTS}, "
                    f"got {self.maximum_retry_attempts}")
        age = self.maximum_record_age
        if age != -1 and not MIN_RECORD_AGE <= age <= MAX_RECORD_AGE:
            return f"--maximum-record-age must be -1 (infinite) or {MIN_RECORD_AGE} to {MAX_RECORD_AGE} seconds, got {age}"
        return None


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One stream record as Lambda would deliver it, with what delivery decisions need."""

    sequence: str
    #: ``ApproximateCreationDateTime`` (timezone-aware), for record age and on-failure messages.
    arrival: datetime | None
    #: The Lambda-shaped record as JSON text: each invocation parses a fresh copy, as Lambda does.
    text: str


def take_batch(buffer: deque[StreamRecord], batch_size: int, max_bytes: int = MAX_PAYLOAD_BYTES) -> list[StreamRecord]:
    """Pop the next batch: at most ``batch_size`` records whose event fits Lambda's payload
    limit (one record always fits: DynamoDB items are at most 400 KB)."""
    batch: list[StreamRecord] = []
    size = len('{"Records":[]}')
    while buffer and len(batch) < batch_size:
        extra = len(buffer[0].text.encode("utf-8")) + (1 if batch else 0)
        if batch and size + extra > max_bytes:
            break
        batch.append(buffer.popleft())
        size += extra
    return batch


def event_text(records: Iterable[StreamRecord]) -> str:
    """The invocation payload for ``records``."""
    return '{"Records":[' + ",".join(record.text for record in records) + "]}"


@dataclass(frozen=True)
class Verdict:
    """How Lambda judges one invocation: success, a partial batch failure from record
    ``first_failed`` (an index into the batch) on, or a function error that fails it all."""

    ok: bool
    first_failed: int | None = None
    reason: str = ""

    @property
    def function_error(self) -> bool:
        return not self.ok and self.first_failed is None


SUCCESS = Verdict(ok=True)


def function_error(reason: str) -> Verdict:
    return Verdict(ok=False, reason=reason)


def verdict_of(response: Any, sequences: list[str], report_batch_item_failures: bool = True) -> Verdict:
    """Judge a function's return value as Lambda does.

    Success: ReportBatchItemFailures off, or no response, or an empty or null
    ``batchItemFailures``. A whole-batch failure: an ``itemIdentifier`` that is null, empty,
    under another key name, or not a sequence number of this batch. Otherwise Lambda resumes
    from the lowest reported sequence number (compared as numbers: they vary in length).
    A response that is not a JSON object is undocumented; it is judged a function error here
    so that nothing is acknowledged by accident.
    """
    if not report_batch_item_failures or response is None:
        return SUCCESS
    if not isinstance(response, dict):
        return function_error(f"the function returned {type(response).__name__}, not a partial batch response object")
    failures = response.get("batchItemFailures")
    if failures is None or failures == []:
        return SUCCESS
    if not isinstance(failures, list):
        return function_error("batchItemFailures is not a list")
    position = {sequence: index for index, sequence in enumerate(sequences)}
    first: int | None = None
    for entry in failures:
        identifier = entry.get("itemIdentifier") if isinstance(entry, dict) else None
        if not isinstance(identifier, str) or not identifier:
            return function_error(f"batchItemFailures holds an entry without a usable itemIdentifier: {entry!r:.100}")
        if identifier not in position:
            return function_error(f"itemIdentifier {identifier!r:.60} is not a sequence number of this batch")
        index = position[identifier]
        if first is None or int(sequences[index]) < int(sequences[first]):
            first = index
    return Verdict(ok=False, first_failed=first, reason=f"{len(failures)} record(s) reported failed")


@dataclass
class Range:
    """Consecutive records still to deliver, with the failures they have been through."""

    records: list[StreamRecord]
    #: Invocations that carried these records and failed (``approximateInvokeCount``).
    invocations: int = 0
    #: Retries spent; splitting a batch is not a retry.
    retries: int = 0
    last_function_error: bool = False


@dataclass(frozen=True)
class Discard:
    """Records given up on: they go to the on-failure destination, then are checkpointed past."""

    records: list[StreamRecord]
    condition: str
    invocations: int
    function_error: bool


@dataclass(frozen=True)
class Step:
    """What settling one invocation asks of the caller, in this order: send ``discard`` to the
    on-failure destination, then checkpoint at ``acknowledged``."""

    acknowledged: str | None = None
    discard: Discard | None = None
    bisected: bool = False


@dataclass
class Delivery:
    """One batch taken from a shard, delivered until every record is acknowledged or discarded.

    Records reach the function in sequence order, and none is acknowledged before the records
    ahead of it, so a checkpoint always means "everything up to here is done".
    """

    config: MappingConfig
    ranges: deque[Range] = field(default_factory=deque)

    @classmethod
    def of(cls, records: list[StreamRecord], config: MappingConfig) -> "Delivery":
        return cls(config, deque([Range(list(records))]) if records else deque())

    @property
    def done(self) -> bool:
        return not self.ranges

    def current(self) -> list[StreamRecord]:
        """The records of the next invocation."""
        return self.ranges[0].records

    def expire(self, now: datetime) -> Discard | None:
        """Split off the records at the head that are older than the maximum record age."""
        limit = self.config.maximum_record_age
        if limit < 0 or not self.ranges:
            return None
        head = self.ranges[0]
        count = 0
        for record in head.records:
            if record.arrival is None or (now - record.arrival).total_seconds() <= limit:
                break
            count += 1
        if count == 0:
            return None
        expired, head.records = head.records[:count], head.records[count:]
        if not head.records:
            self.ranges.popleft()
        return Discard(expired, RECORD_AGE_EXCEEDED, head.invocations, head.last_function_error)

    def settle(self, verdict: Verdict) -> Step:
        """Apply the verdict on the invocation of :meth:`current`."""
        head = self.ranges[0]
        if verdict.ok:
            self.ranges.popleft()
            return Step(acknowledged=head.records[-1].sequence)
        head.invocations += 1
        acknowledged = None
        if verdict.first_failed is not None:
            # Everything before the lowest failed record is done; with bisect on too, AWS
            # "bisects at the returned sequence number": the same thing.
            if verdict.first_failed > 0:
                acknowledged = head.records[verdict.first_failed - 1].sequence
            head.records = head.records[verdict.first_failed :]
            head.last_function_error = False
        else:
            head.last_function_error = True
            if self.config.bisect_batch_on_function_error and len(head.records) > 1:
                middle = len(head.records) // 2
                self.ranges.popleft()
                for half in (head.records[middle:], head.records[:middle]):
                    self.ranges.appendleft(Range(half, head.invocations, head.retries, True))
                return Step(bisected=True)
        head.retries += 1
        limit = self.config.maximum_retry_attempts
        if 0 <= limit < head.retries:
            self.ranges.popleft()
            discard = Discard(head.records, RETRIES_EXHAUSTED, head.invocations, head.last_function_error)
            return Step(acknowledged=head.records[-1].sequence, discard=discard)
        return Step(acknowledged=acknowledged)


def _utc(moment: datetime, fraction: bool) -> str:
    text = moment.astimezone(timezone.utc).isoformat(timespec="milliseconds" if fraction else "seconds")
    return text.replace("+00:00", "Z")


def failure_message(
    discard: Discard, *, shard_id: str, stream_arn: str, function_arn: str, now: datetime, request_id: str
) -> dict[str, Any]:
    """The message Lambda sends an on-failure destination for discarded records: metadata
    only (shard and sequence range), never the records; the redrive reads them back."""
    first, last = discard.records[0], discard.records[-1]
    response: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
    if discard.function_error:
        response["functionError"] = "Unhandled"
    info: dict[str, Any] = {
        "shardId": shard_id,
        "startSequenceNumber": first.sequence,
        "endSequenceNumber": last.sequence,
    }
    if first.arrival is not None:
        info["approximateArrivalOfFirstRecord"] = _utc(first.arrival, fraction=False)
    if last.arrival is not None:
        info["approximateArrivalOfLastRecord"] = _utc(last.arrival, fraction=False)
    info["batchSize"] = len(discard.records)
    info["streamArn"] = stream_arn
    return {
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": discard.condition,
            "approximateInvokeCount": discard.invocations,
        },
        "responseContext": response,
        "version": "1.0",
        "timestamp": _utc(now, fraction=True),
        "DDBStreamBatchInfo": info,
    }
