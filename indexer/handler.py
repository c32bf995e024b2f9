"""The Lambda entry point for DynamoDB Streams: ``indexer.handler.handler(event, context)``.

Importing this module connects to nothing; the clients are built on the first invocation and
reused while the container stays warm. Configure the event source mapping with
``FunctionResponseTypes: [ReportBatchItemFailures]``.
"""

from __future__ import annotations

import gc
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import structlog

from . import logs, metrics
from .apply import Deadline, RetryPolicy
from .batch import Pipeline, Summary
from .settings import Settings

log = structlog.get_logger("indexer.handler")

#: Time kept back from Lambda's deadline to send dead letters and return the response.
RESERVE_SECONDS = 3.0

_container: tuple[Pipeline, Settings] | None = None
#: Also handed each invocation's figures (metric name → value), e.g. local sync's live view.
listeners: list[Callable[[Mapping[str, metrics.Value]], None]] = []


def build_pipeline(settings: Settings) -> Pipeline:
    """The adapters for one container: search store, target cache, dead-letter queue, and the
    table reader for records around a rebuild's scan start (its client is built on first use)."""
    from .backends import store_for
    from .deadletter import SqsDeadLetters
    from .layout import Targets
    from .tablestate import TableReader

    dlq_url = settings.required("dlq_url")
    store = store_for(settings)
    return Pipeline(
        store=store,
        targets=Targets(store, mapping=settings.index_mapping, ttl=settings.targets_ttl),
        dead_letters=SqsDeadLetters(dlq_url),
        default_alias=settings.index_name,
        policy=RetryPolicy.of(settings),
        table_reader=TableReader(),
    )


def container() -> tuple[Pipeline, Settings]:
    """The container's pipeline and the settings it was built from, built on first use from
    the environment and reused while the container is warm."""
    global _container
    if _container is None:
        settings = Settings.from_env(require=("DLQ_URL",))
        logs.configure(settings.log_level)
        _container = (build_pipeline(settings), settings)
        if not settings.verify_certs:
            log.warning("tls_verification_disabled", elasticsearch_url=settings.elasticsearch_url)
        # Everything imported and built so far lives as long as the container: kept out of
        # the collector's way, so its full passes during a batch don't walk it again each time.
        gc.freeze()
    return _container


def pipeline() -> Pipeline:
    """The container's pipeline (see :func:`container`)."""
    return container()[0]


def reset() -> None:
    """Forget the built clients and the secret read (tests; a changed environment)."""
    global _container
    _container = None
    from . import secrets

    secrets.reset()


def deadline_of(context: Any, fallback: float) -> Deadline:
    """The retry deadline: Lambda's remaining time less a reserve, or ``fallback`` seconds."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining):
        return Deadline.after(max(remaining() / 1000.0 - RESERVE_SECONDS, 0.0))
    return Deadline.after(fallback)


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block, back as it was after.

    A batch allocates tens of thousands of objects (heads, changes, documents) that live until
    it ends, so every collection during it walks them again and frees nothing: about 2 ms of a
    cold batch's CPU (bench/handler_bench.py). When it ends they are freed by reference
    counting, and the next collection finds only what is left. A batch is bounded (Lambda's
    6 MB payload), so the memory held meanwhile is too."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """Apply a DynamoDB Streams batch; return Lambda's partial-batch response."""
    started = time.perf_counter()
    current, settings = container()
    with collector_paused():
        summary = current.run(event, deadline_of(context, settings.time_budget), metrics.BatchMetrics())
    fields: dict[str, Any] = dict(summary.counts())
    fields["ms"] = round((time.perf_counter() - started) * 1000, 1)
    if summary.error:
        fields["error"] = summary.error[:500]
    log.info("batch_done", **fields)
    publish(summary, settings)
    return summary.response()


def publish(summary: Summary, settings: Settings) -> None:
    """The invocation's metrics: one EMF line on stdout (CloudWatch Logs extracts the metrics
    from Lambda's log stream), and the figures to each of :data:`listeners`."""
    figures = metrics.handler_figures(summary.counts(), summary.metrics)
    for listener in listeners:
        listener(figures)
    if settings.metrics:
        document = metrics.emf_document(
            figures, metrics.HANDLER_UNITS, settings.metrics_namespace,
            metrics.dimensions(summary.alias, settings.function_name), summary.metrics.wall() * 1000,
        )
        print(metrics.emf_line(document), file=sys.stdout, flush=True)
