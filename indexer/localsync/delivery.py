"""One batch delivered to the function as Lambda's event source mapping would: invoke, judge,
retry, bisect, discard to the on-failure destination, checkpoint. The decisions are
:mod:`indexer.localsync.esm`'s; this module makes the calls and keeps the counts.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

import structlog

from .esm import (
    Delivery, Discard, MappingConfig, Step, StreamRecord, Verdict, event_text, failure_message,
    function_error, verdict_of,
)
from .lambdalike import Handler, InvocationContext, OnFailureQueue
from ..errors import RetryableError

log = structlog.get_logger("indexer.localsync.delivery")

#: Longest wait between retries of a failing batch or an unreadable stream.
MAX_BACKOFF_SECONDS = 10.0

#: Called with the new checkpoint and how many records it acknowledges (0 for discarded ones).
Checkpoint = Callable[[str, int], None]


@dataclass
class Totals:
    invocations: int = 0
    acknowledged: int = 0
    function_errors: int = 0
    partial_failures: int = 0
    bisections: int = 0
    discarded: int = 0
    discarded_batches: int = 0


def backoff(base: float, attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1``: doubling from ``base``, capped."""
    return min(max(base, 0.01) * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)


@dataclass
class Deliverer:
    """Delivers batches of one stream to one function."""

    handler: Handler
    config: MappingConfig
    stream_arn: str
    function_name: str
    function_arn: str
    function_timeout: float
    on_failure: OnFailureQueue | None
    stop: threading.Event
    clock: Callable[[], datetime]
    retry_base: float
    totals: Totals

    def deliver(self, shard_id: str, batch: list[StreamRecord], checkpoint: Checkpoint) -> bool:
        """Deliver ``batch`` until every record is acknowledged or discarded; False if we were
        stopped first (what is not checkpointed is read again after a restart)."""
        delivery = Delivery.of(batch, self.config)
        failures = 0
        while not delivery.done:
            expired = delivery.expire(self.clock())
            if expired is not None:
                if not self.discard(shard_id, expired):
                    return False
                checkpoint(expired.records[-1].sequence, 0)
                continue
            records = delivery.current()
            verdict = self.invoke(shard_id, records)
            step = delivery.settle(verdict)
            if step.bisected:
                self.totals.bisections += 1
                log.info("batch_bisected", shard_id=shard_id, records=len(records))
            if step.discard is not None:
                if not self.discard(shard_id, step.discard):
                    return False
            if step.acknowledged is not None:
                checkpoint(step.acknowledged, _acknowledged(records, step))
            if not verdict.ok:
                failures += 1
                if self.stop.is_set():
                    return False
                self.stop.wait(backoff(self.retry_base, failures))
        return True

    def invoke(self, shard_id: str, records: list[StreamRecord]) -> Verdict:
        """Call the function as Lambda does (a fresh JSON event, a context), judge its answer."""
        event = json.loads(event_text(records))
        context = InvocationContext(self.function_name, self.function_arn, self.function_timeout)
        fields = {"shard_id": shard_id, "first": records[0].sequence, "last": records[-1].sequence,
                  "records": len(records)}
        self.totals.invocations += 1
        started = time.perf_counter()
        try:
            response = self.handler(event, context)
        except Exception as exc:  # Lambda's view of an unhandled error: the batch failed, and is retried
            self.totals.function_errors += 1
            reason = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("function_error", **fields, error=reason, exc_info=True)
            return function_error(reason)
        verdict = verdict_of(response, [r.sequence for r in records], self.config.report_batch_item_failures)
        ms = round((time.perf_counter() - started) * 1000, 1)
        if verdict.function_error:
            self.totals.function_errors += 1
            log.warning("function_error", **fields, error=verdict.reason, ms=ms)
        elif not verdict.ok:
            self.totals.partial_failures += 1
            resume_at = records[verdict.first_failed].sequence if verdict.first_failed is not None else None
            log.warning("partial_batch_failure", **fields, resume_at=resume_at, ms=ms)
        else:
            log.info("batch_delivered", **fields, ms=ms)
        return verdict

    def discard(self, shard_id: str, discard: Discard) -> bool:
        """Send the on-failure message (retrying until it is taken); False if we were stopped
        first. Without a destination the batch is only logged, as Lambda drops it."""
        message = failure_message(
            discard, shard_id=shard_id, stream_arn=self.stream_arn, function_arn=self.function_arn,
            now=self.clock(), request_id=str(uuid.uuid4()),
        )
        info = message["DDBStreamBatchInfo"]
        log.error("records_discarded", condition=discard.condition, shard_id=shard_id,
                  start=info["startSequenceNumber"], end=info["endSequenceNumber"], batch_size=info["batchSize"],
                  destination=self.on_failure.queue_url if self.on_failure else None)
        attempt = 0
        while self.on_failure is not None:
            try:
                self.on_failure.send(message)
                break
            except RetryableError as exc:
                attempt += 1
                log.error("on_failure_unreachable", error=str(exc), attempt=attempt)
                if self.stop.wait(backoff(self.retry_base, attempt)):
                    return False
        self.totals.discarded += len(discard.records)
        self.totals.discarded_batches += 1
        return True


def _acknowledged(records: list[StreamRecord], step: Step) -> int:
    """How many of the invoked records the step acknowledges (not those it discards)."""
    count = next((i + 1 for i, record in enumerate(records) if record.sequence == step.acknowledged), 0)
    return count - (len(step.discard.records) if step.discard is not None else 0)
