"""The Lambda entry point for DynamoDB Streams: ``indexer.handler.handler(event, context)``.

Importing this module connects to nothing; the clients are built on the first invocation and
reused while the container stays warm. Configure the event source mapping with
``FunctionResponseTypes: [ReportBatchItemFailures]``.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from . import logs
from .apply import Deadline, RetryPolicy
from .batch import Pipeline
from .settings import Settings

log = structlog.get_logger("indexer.handler")

#: Time kept back from Lambda's deadline to send dead letters and return the response.
RESERVE_SECONDS = 3.0

_pipeline: Pipeline | None = None
_settings: Settings | None = None


def build_pipeline(settings: Settings) -> Pipeline:
    """The adapters for one container: search store, target cache, dead-letter queue."""
    from .backends import store_for
    from .deadletter import SqsDeadLetters
    from .layout import Targets

    store = store_for(settings)
    assert settings.dlq_url is not None
    return Pipeline(
        store=store,
        targets=Targets(store, mapping=settings.index_mapping, ttl=settings.targets_ttl),
        dead_letters=SqsDeadLetters(settings.dlq_url),
        default_alias=settings.index_name,
        policy=RetryPolicy(max_attempts=settings.retry_max_attempts, request_timeout=settings.request_timeout),
    )


def pipeline() -> Pipeline:
    """The container's pipeline, built on first use from the environment."""
    global _pipeline, _settings
    if _pipeline is None:
        _settings = Settings.from_env(require=("DLQ_URL",))
        logs.configure(_settings.log_level)
        _pipeline = build_pipeline(_settings)
        if not _settings.verify_certs:
            log.warning("tls_verification_disabled", elasticsearch_url=_settings.elasticsearch_url)
    return _pipeline


def reset() -> None:
    """Forget the built clients (tests; a changed environment)."""
    global _pipeline, _settings
    _pipeline = None
    _settings = None


def deadline_of(context: Any, fallback: float) -> Deadline:
    """The retry deadline: Lambda's remaining time less a reserve, or ``fallback`` seconds."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining):
        return Deadline.after(max(remaining() / 1000.0 - RESERVE_SECONDS, 0.0))
    return Deadline.after(fallback)


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """Apply a DynamoDB Streams batch; return Lambda's partial-batch response."""
    started = time.perf_counter()
    current = pipeline()
    assert _settings is not None
    summary = current.run(event, deadline_of(context, _settings.time_budget))
    fields: dict[str, Any] = dict(summary.counts())
    fields["ms"] = round((time.perf_counter() - started) * 1000, 1)
    if summary.error:
        fields["error"] = summary.error[:500]
    log.info("batch_done", **fields)
    return summary.response()
