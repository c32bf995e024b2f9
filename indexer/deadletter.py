"""Dead-letter messages: everything needed to retry a record without the stream, sent to SQS.

boto3 is imported (through ``indexer.aws``) only when a message is sent: most invocations never need it,
and its import costs a quarter of a second of cold start.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import structlog

from .errors import RecordError

log = structlog.get_logger("indexer.deadletter")

MESSAGE_TYPE = "dynamodb-es-indexer/dead-letter"
MESSAGE_VERSION = 1
#: SQS's message size limit (256 KiB); larger records are sent without their images.
MAX_MESSAGE_BYTES = 256 * 1024
#: SendMessageBatch takes at most ten entries and 256 KiB for all bodies together
#: (BatchRequestTooLong otherwise: https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessageBatch.html).
_SQS_BATCH = 10
MAX_BATCH_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Letter:
    """One record that could not be indexed, and why."""

    record: Any
    error: RecordError
    attempts: int = 1
    doc_id: str | None = None
    alias: str | None = None


def message(letter: Letter, failed_at: datetime) -> dict[str, Any]:
    """The dead-letter message body for one record (the README documents this shape)."""
    record = letter.record
    stream = record.get("dynamodb") if isinstance(record, dict) else None
    body: dict[str, Any] = {
        "type": MESSAGE_TYPE,
        "version": MESSAGE_VERSION,
        "record": record,
        "error": {"class": letter.error.kind, "message": letter.error.message},
        "attempts": letter.attempts,
        "failed_at": failed_at.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    if isinstance(stream, dict) and isinstance(stream.get("SequenceNumber"), str):
        body["sequence_number"] = stream["SequenceNumber"]
    if isinstance(record, dict) and isinstance(record.get("eventSourceARN"), str):
        body["event_source_arn"] = record["eventSourceARN"]
    if letter.doc_id is not None:
        body["doc_id"] = letter.doc_id
    if letter.alias is not None:
        body["index"] = letter.alias
    return body


def encoded(body: dict[str, Any]) -> str:
    """The message text, shrunk to fit SQS: first without OldImage, then without NewImage
    (redrive then reads the item back from the table, flagged by ``images_omitted``).

    ASCII-only JSON: SQS refuses some characters (and a malformed record may hold lone
    surrogates); escaped, every record survives the trip byte for byte."""
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=True, default=str)
    if len(text.encode("utf-8")) <= MAX_MESSAGE_BYTES:
        return text
    record = body.get("record")
    stream = record.get("dynamodb") if isinstance(record, dict) else None
    if isinstance(stream, dict):
        for image in ("OldImage", "NewImage"):
            if image in stream:
                stream = {key: value for key, value in stream.items() if key != image}
                body = {**body, "record": {**record, "dynamodb": stream}, "images_omitted": True}
                text = json.dumps(body, separators=(",", ":"), ensure_ascii=True, default=str)
                if len(text.encode("utf-8")) <= MAX_MESSAGE_BYTES:
                    return text
    # Not even the keys fit (a malformed record): keep a bounded prefix of its text.
    raw = json.dumps(body.get("record"), ensure_ascii=True, default=str)
    small = {**body, "record": None, "record_text": raw[: MAX_MESSAGE_BYTES // 2], "record_truncated": True}
    return json.dumps(small, separators=(",", ":"), ensure_ascii=True, default=str)


class SqsDeadLetters:
    """Sends dead-letter messages to one SQS queue, ten at a time."""

    def __init__(self, queue_url: str, client_factory: Callable[[], Any] | None = None) -> None:
        self.queue_url = queue_url
        self._client_factory = client_factory or _default_client
        self._client: Any = None
        self.fifo = queue_url.endswith(".fifo")

    def _sqs(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def send(self, bodies: list[str]) -> list[int]:
        """Send every body; return the positions of those SQS did not take."""
        from botocore.exceptions import BotoCoreError, ClientError

        failed: list[int] = []
        for positions in batches([len(text.encode("utf-8")) for text in bodies]):
            entries = []
            for offset, position in enumerate(positions):
                text = bodies[position]
                entry: dict[str, Any] = {"Id": str(offset), "MessageBody": text}
                if self.fifo:
                    entry["MessageGroupId"] = "dead-letters"
                    entry["MessageDeduplicationId"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
                entries.append(entry)
            try:
                response = self._sqs().send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except (BotoCoreError, ClientError) as exc:
                log.error("dead_letter_queue_unreachable", queue_url=self.queue_url, error=str(exc))
                failed.extend(positions)
                continue
            for entry in response.get("Failed", []):
                log.error(
                    "dead_letter_refused",
                    queue_url=self.queue_url,
                    code=entry.get("Code"),
                    error=entry.get("Message"),
                )
                failed.append(positions[int(entry["Id"])])
        return sorted(failed)


def batches(sizes: list[int], max_count: int = _SQS_BATCH, max_bytes: int = MAX_BATCH_BYTES) -> list[list[int]]:
    """Positions grouped into SendMessageBatch calls within SQS's count and total-size limits,
    in order (each body is already at most MAX_MESSAGE_BYTES, so each fits a call alone)."""
    groups: list[list[int]] = []
    total = 0
    for position, size in enumerate(sizes):
        if not groups or len(groups[-1]) >= max_count or total + size > max_bytes:
            groups.append([])
            total = 0
        groups[-1].append(position)
        total += size
    return groups


def _default_client() -> Any:
    # Inside a Lambda invocation: a short read timeout and few attempts, so an unreachable
    # queue leaves time to report the records as failed (Lambda then retries them).
    from . import aws

    return aws.client("sqs", read_timeout=10, max_attempts=3)


def now() -> datetime:
    return datetime.now(timezone.utc)
