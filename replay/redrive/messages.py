"""Dead-letter queue messages, read without I/O: what each one is and what redrive sends back.

A deployment fills its dead-letter queue with two kinds of message: the handler's own
(``indexer.deadletter``: the full stream record, the reason, an attempt count) and the Lambda
event source mapping's on-failure destination messages (only a shard and a sequence-number
range: the records must be read back from the stream). Anything else is *unreadable*: redrive
reports it and never deletes it silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from indexer import deadletter
from indexer.errors import ConversionError
from indexer.errors import RecordError
from indexer.ids import document_id
from indexer.records import alias_problem, sequence_of, table_of

#: Bytes of an unreadable message shown in reports.
PREVIEW_CHARS = 80
#: Lambda's on-failure destination metadata for a DynamoDB stream batch.
STREAM_BATCH_INFO = "DDBStreamBatchInfo"
#: The same for a Kinesis stream: a known shape, but not this project's stream.
KINESIS_BATCH_INFO = "KinesisBatchInfo"
#: Shard ids as the DynamoDB Streams API accepts them (botocore checks 28–65 characters).
_SHARD_ID_LENGTH = range(28, 66)


@dataclass(frozen=True)
class DeadLetter:
    """A message the handler sent: one record that could not be indexed."""

    body: dict[str, Any]
    #: The stream record as delivered; None when it was too large even without its images
    #: (``record_truncated``), and so cannot be retried.
    record: Any
    attempts: int
    #: The images were dropped to fit SQS: an upsert must be read back from the table.
    images_omitted: bool
    #: The alias the handler wrote when it failed (``index``), when it names a valid one.
    alias: str | None

    @property
    def needs_item(self) -> bool:
        """True when the record is an upsert whose new image was dropped to fit SQS."""
        record = self.record
        if not self.images_omitted or not isinstance(record, dict):
            return False
        stream = record.get("dynamodb")
        return (
            record.get("eventName") in ("INSERT", "MODIFY")
            and isinstance(stream, dict)
            and "NewImage" not in stream
        )

    def describe(self) -> str:
        record = self.record if isinstance(self.record, dict) else {}
        stream = record.get("dynamodb") if isinstance(record.get("dynamodb"), dict) else {}
        doc = self.body.get("doc_id")
        if not isinstance(doc, str) and isinstance(stream, dict):
            try:
                doc = document_id(stream.get("Keys"))
            except ConversionError:
                doc = None
        parts = [f"{record.get('eventName', 'record')}"]
        if isinstance(doc, str):
            parts.append(f"doc {doc!r:.120}")
        sequence = stream.get("SequenceNumber") if isinstance(stream, dict) else None
        if isinstance(sequence, str):
            parts.append(f"sequence {sequence}")
        parts.append(f"attempt {self.attempts}")
        error = self.body.get("error")
        if isinstance(error, dict) and isinstance(error.get("class"), str):
            parts.append(f"last failed with {error['class']}")
        if self.images_omitted:
            parts.append("images omitted")
        return ", ".join(parts)


@dataclass(frozen=True)
class StreamRange:
    """A Lambda on-failure destination message: records of one shard, by sequence range."""

    body: dict[str, Any]
    stream_arn: str
    shard_id: str
    #: The range's first and last sequence numbers, as text (the API takes text).
    start: str
    end: str
    batch_size: int | None
    condition: str | None

    #: Lambda gave up on these records once; a redrive that fails them again is attempt 2.
    attempts: int = 1

    @property
    def table(self) -> str:
        return table_of(self.stream_arn) or "?"

    def describe(self) -> str:
        size = f", {self.batch_size} record{'' if self.batch_size == 1 else 's'}" if self.batch_size is not None else ""
        reason = f", {self.condition}" if self.condition else ""
        return f"table {self.table} shard {self.shard_id} sequence numbers {self.start}..{self.end}{size}{reason}"


@dataclass(frozen=True)
class Unreadable:
    """Not JSON, or not a shape redrive knows; ``reason`` says which."""

    reason: str
    preview: str

    def describe(self) -> str:
        return f"{self.reason}: {self.preview}"


Message = DeadLetter | StreamRange | Unreadable


def preview(text: str, chars: int = PREVIEW_CHARS) -> str:
    """The first characters of a message, escaped so they print on one line."""
    shown = json.dumps(text[:chars], ensure_ascii=True)
    return shown + (" ..." if len(text) > chars else "")


def parse(text: str) -> Message:
    """What a message body is; never raises."""
    try:
        body = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        return Unreadable(f"not JSON ({exc.__class__.__name__}: {exc})"[:200], preview(text))
    except RecursionError:
        return Unreadable("not JSON a redrive can read: nested deeper than Python's stack", preview(text))
    if isinstance(body, dict) and body.get("Type") == "Notification" and isinstance(body.get("Message"), str):
        # An on-failure destination that is an SNS topic delivers to SQS inside SNS's envelope
        # (unless raw message delivery is on).
        inner = parse(body["Message"])
        return inner if not isinstance(inner, Unreadable) else Unreadable(f"SNS notification: {inner.reason}", preview(text))
    if not isinstance(body, dict):
        return Unreadable(f"a JSON {type(body).__name__}, not an object", preview(text))
    if body.get("type") == deadletter.MESSAGE_TYPE:
        return _dead_letter(body, text)
    if STREAM_BATCH_INFO in body:
        return _stream_range(body, text)
    if KINESIS_BATCH_INFO in body:
        return Unreadable("an on-failure message for a Kinesis stream, not a DynamoDB stream", preview(text))
    keys = ", ".join(sorted(body)[:6]) or "none"
    return Unreadable(f"not a dead-letter or on-failure message (keys: {keys})"[:200], preview(text))


def _no_constant(name: str) -> Any:
    """Python's json takes ``NaN`` and ``Infinity``; JSON and every message we send do not."""
    raise ValueError(f"{name} is not a JSON number")


def _dead_letter(body: dict[str, Any], text: str) -> Message:
    version = body.get("version", deadletter.MESSAGE_VERSION)
    if type(version) is not int or version > deadletter.MESSAGE_VERSION:
        return Unreadable(
            f"dead-letter message version {version!r:.20} is newer than this redrive understands "
            f"({deadletter.MESSAGE_VERSION})",
            preview(text),
        )
    if "record" not in body:
        return Unreadable("dead-letter message without a record", preview(text))
    attempts = body.get("attempts")
    alias = body.get("index")
    return DeadLetter(
        body=body,
        record=body["record"],
        attempts=attempts if type(attempts) is int and attempts >= 1 else 1,
        images_omitted=body.get("images_omitted") is True,
        alias=alias if isinstance(alias, str) and alias_problem(alias) is None else None,
    )


def _stream_range(body: dict[str, Any], text: str) -> Message:
    info = body[STREAM_BATCH_INFO]
    if not isinstance(info, dict):
        return Unreadable(f"{STREAM_BATCH_INFO} is not an object", preview(text))
    shard = info.get("shardId")
    arn = info.get("streamArn")
    start, end = info.get("startSequenceNumber"), info.get("endSequenceNumber")
    problem = None
    if not isinstance(shard, str) or len(shard) not in _SHARD_ID_LENGTH:
        problem = f"shardId {shard!r:.80} is not a shard id"
    elif not isinstance(arn, str) or table_of(arn) is None or "/stream/" not in arn:
        problem = f"streamArn {arn!r:.200} is not a DynamoDB stream ARN"
    else:
        try:
            if sequence_of(start) > sequence_of(end):
                problem = f"startSequenceNumber {start} is after endSequenceNumber {end}"
        except RecordError:
            problem = f"sequence numbers {start!r:.50}..{end!r:.50} are not 1 to 40 digits"
    if problem:
        return Unreadable(f"on-failure message: {problem}", preview(text))
    context = body.get("requestContext") if isinstance(body.get("requestContext"), dict) else {}
    size = info.get("batchSize")
    condition = context.get("condition")
    return StreamRange(
        body=body,
        stream_arn=arn,  # type: ignore[arg-type]
        shard_id=shard,  # type: ignore[arg-type]
        start=start,  # type: ignore[arg-type]
        end=end,  # type: ignore[arg-type]
        batch_size=size if type(size) is int else None,
        condition=condition if isinstance(condition, str) else None,
    )


def retried_body(
    letter: DeadLetter, error: RecordError, failed_at: datetime, doc_id: str | None, alias: str | None
) -> dict[str, Any]:
    """The handler's message once more, one attempt further, with the new reason and time.

    SQS cannot edit a message, so "raise the attempt count" means sending this and deleting
    the original. Built by the handler's own ``deadletter.message`` so the shape stays one;
    what it does not know (``images_omitted``, a truncated record's text) is carried over.
    """
    fresh = deadletter.message(
        deadletter.Letter(
            letter.record,
            error,
            attempts=letter.attempts + 1,
            doc_id=doc_id if doc_id is not None else _text(letter.body.get("doc_id")),
            alias=alias if alias is not None else letter.alias,
        ),
        failed_at,
    )
    return {**letter.body, **fresh}


def range_letter(
    record: Any, error: RecordError, failed_at: datetime, doc_id: str | None, alias: str | None
) -> dict[str, Any]:
    """A handler-shaped message for a record read back from the stream that failed again: it
    now carries its payload, so it no longer depends on the stream's 24-hour retention."""
    return deadletter.message(
        deadletter.Letter(record, error, attempts=StreamRange.attempts + 1, doc_id=doc_id, alias=alias), failed_at
    )


def parking_url(queue_url: str) -> str:
    """The default parking queue: the dead-letter queue's URL with ``-parking`` appended to
    its name (before ``.fifo``: a FIFO queue's name must end with it)."""
    if queue_url.endswith(".fifo"):
        return queue_url[: -len(".fifo")] + "-parking.fifo"
    return queue_url.rstrip("/") + "-parking"


def truncated_error() -> RecordError:
    return RecordError(
        "record_truncated",
        "the record did not fit in a dead-letter message even without its images; only a prefix "
        "of its text was kept, so it cannot be retried: repair the item with `python -m replay --full` "
        "or `--verify --fix`",
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
