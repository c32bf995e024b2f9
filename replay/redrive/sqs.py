"""The SQS adapter for redrive: receive, delete, hand back and send queue messages.

Sending goes through the handler's own ``indexer.deadletter.SqsDeadLetters`` (batches of ten,
FIFO group and deduplication ids), so a message redrive re-queues is sent exactly as the
handler would send it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import structlog

from indexer import aws
from indexer.deadletter import SqsDeadLetters
from indexer.errors import QueueError, SettingsError

log = structlog.get_logger("replay.redrive.sqs")

_BATCH = 10
_MISSING = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
#: The longest visibility timeout SQS accepts (12 hours).
MAX_VISIBILITY = 43_200


@dataclass(frozen=True, slots=True)
class Received:
    message_id: str
    receipt: str
    body: str


def _default_client() -> Any:
    return aws.client("sqs")


class Queue:
    """One SQS queue, by URL."""

    def __init__(self, url: str, client_factory: Callable[[], Any] = _default_client) -> None:
        self.url = url
        self._factory = client_factory
        self._client: Any = None
        self.sender = SqsDeadLetters(url, client_factory=self._sqs)

    def _sqs(self) -> Any:
        if self._client is None:
            self._client = self._factory()
        return self._client

    def count(self, setting: str = "the queue URL") -> int | None:
        """Messages visible now (SQS's approximation); None when the queue does not exist.

        Raises :class:`SettingsError`, naming ``setting``, when the queue cannot be read for
        another reason (credentials, endpoint, permissions): nothing can be redriven then."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            attributes = self._sqs().get_queue_attributes(
                QueueUrl=self.url, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise SettingsError(f"{setting}: cannot read queue {self.url}: {exc}") from None
        except BotoCoreError as exc:
            raise SettingsError(f"{setting}: cannot reach SQS for {self.url}: {exc}") from None
        return int(attributes.get("ApproximateNumberOfMessages", 0))

    def receive(self, count: int, visibility: int, wait: int) -> list[Received]:
        """Up to ``count`` (≤ 10) messages, hidden from other readers for ``visibility`` s."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            got = self._sqs().receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=max(1, min(count, _BATCH)),
                VisibilityTimeout=min(visibility, MAX_VISIBILITY),
                WaitTimeSeconds=wait,
            )
        except (ClientError, BotoCoreError) as exc:
            raise QueueError(f"receiving from {self.url}: {exc}") from exc
        return [Received(m["MessageId"], m["ReceiptHandle"], m.get("Body", "")) for m in got.get("Messages", [])]

    def send(self, bodies: list[str]) -> list[int]:
        """Send every body; the positions of those SQS did not take."""
        return self.sender.send(bodies) if bodies else []

    def delete(self, receipts: list[str]) -> list[int]:
        """Delete the messages; the positions of those SQS did not delete (they come back
        when their visibility ends, which is harmless: re-applying is idempotent)."""
        return self._each(receipts, "delete_message_batch", lambda receipt: {"ReceiptHandle": receipt})

    def release(self, receipts: list[str]) -> list[int]:
        """Make the messages visible again now instead of when their visibility ends."""
        return self._each(
            receipts, "change_message_visibility_batch", lambda receipt: {"ReceiptHandle": receipt, "VisibilityTimeout": 0}
        )

    def _each(self, receipts: list[str], operation: str, entry: Callable[[str], dict[str, Any]]) -> list[int]:
        from botocore.exceptions import BotoCoreError, ClientError

        failed: list[int] = []
        for start in range(0, len(receipts), _BATCH):
            chunk = receipts[start : start + _BATCH]
            entries = [{"Id": str(offset), **entry(receipt)} for offset, receipt in enumerate(chunk)]
            try:
                response = getattr(self._sqs(), operation)(QueueUrl=self.url, Entries=entries)
            except (ClientError, BotoCoreError) as exc:
                log.error("queue_call_failed", queue_url=self.url, operation=operation, error=str(exc))
                failed.extend(range(start, start + len(chunk)))
                continue
            for refused in response.get("Failed", []):
                log.error("queue_entry_refused", queue_url=self.url, operation=operation,
                          code=refused.get("Code"), error=refused.get("Message"))
                failed.append(start + int(refused["Id"]))
        return sorted(failed)
