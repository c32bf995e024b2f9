"""``python -m replay --redrive``: put dead-lettered records back through the ordering guard.

Each batch of messages is read back into stream records, collapsed per document and applied
by ``indexer.apply.apply``, exactly as the handler applies a Lambda batch: a record older than
what the index holds is skipped, never applied, so redrive is safe to run twice and while live
sync or a replay is running. docs/redrive.md describes the messages understood, the attempt
and parking policy, the summary and the exit codes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping

import structlog

from indexer import logs
from indexer.errors import ReadbackFailed, SettingsError
from indexer.handler import build_pipeline
from indexer.settings import Settings

from . import messages
from .readback import Readback
from .trust import Binding
from .engine import Redrive
from .report import Summary
from .sqs import Queue

log = structlog.get_logger("replay.redrive.command")


@dataclass(frozen=True)
class RedriveOptions:
    """``--redrive``: how to redrive. Each field is the flag of the same name (``replay.cli``
    builds this from the flags given; ``--queue-url`` overrides ``DLQ_URL`` in the settings);
    the defaults here are the flags' defaults."""

    #: Stop after this many messages (None: until the queue is empty).
    max_messages: int | None = None
    #: After this many failed attempts a message moves to the parking queue.
    max_attempts: int = 5
    #: The parking queue (None: ``PARKING_QUEUE_URL``, else the default beside the DLQ).
    parking_queue_url: str | None = None
    dry_run: bool = False
    progress: bool = True


def parking_queue(options: RedriveOptions, settings: Settings, dlq_url: str) -> tuple[Queue | None, str]:
    """The parking queue (None when there is none), and the default's URL for hints.

    ``--parking-queue-url``, else ``PARKING_QUEUE_URL``: it must exist. Else the dead-letter
    queue's URL with ``-parking`` appended, used only when that queue exists: redrive creates
    no infrastructure."""
    default = messages.parking_url(dlq_url)
    flag = options.parking_queue_url
    explicit = flag or settings.parking_queue_url
    if explicit is None:
        queue = Queue(default)
        try:
            found = queue.count("the default parking queue") is not None
        except SettingsError as exc:  # e.g. no permission on a queue nobody asked for
            log.info("default_parking_queue_unusable", queue_url=default, error=str(exc))
            found = False
        return (queue if found else None), default
    name = "--parking-queue-url" if flag else "PARKING_QUEUE_URL"
    if not explicit.startswith(("https://", "http://")):
        raise SettingsError(f"{name} must be an SQS queue URL (https://...), got {explicit!r}")
    if explicit.rstrip("/") == dlq_url.rstrip("/"):
        raise SettingsError(f"{name} names the dead-letter queue itself: give a separate queue for parked messages")
    queue = Queue(explicit)
    if queue.count(name) is None:
        raise SettingsError(f"{name} names no queue: {explicit} (create it, or leave it unset)")
    return queue, default


def bind(settings: Settings, readback: Readback) -> Binding:
    """The table (by ARN: account and region) and the alias this run serves; nothing in a
    message can change them (docs/security.md)."""
    table = settings.required("table_name")
    try:
        arn = readback.table_arn(table)
    except ReadbackFailed as exc:
        raise SettingsError(f"TABLE_NAME (--table): {exc}") from None
    if arn is None:
        raise SettingsError(f"TABLE_NAME (--table) names no table where AWS points: {table!r}")
    return Binding(table, arn, settings.index_name or table.lower())


def run(options: RedriveOptions, env: Mapping[str, str], say: Callable[[str], None] | None = None) -> Summary:
    """Redrive the dead-letter queue; ``say`` gets one line per message in a dry run. The
    summary's ``exit_code()``: 0 when every message was redriven or stale (or there were none),
    1 when any failed again, was parked, unreadable, gone or left unresolved."""
    started = time.perf_counter()
    settings = Settings.from_env(env, require=("DLQ_URL", "TABLE_NAME"))
    logs.configure(settings.log_level, to_stderr=True)
    dlq_url = settings.required("dlq_url")
    dlq = Queue(dlq_url)
    waiting = dlq.count("DLQ_URL (--queue-url)")
    if waiting is None:
        raise SettingsError(f"DLQ_URL (--queue-url) names no queue: {dlq_url}")
    parking, default_parking = parking_queue(options, settings, dlq_url)
    readback = Readback()
    binding = bind(settings, readback)
    from indexer.backends import check_cluster

    pipeline = build_pipeline(settings)
    check_cluster(pipeline.store, settings.elasticsearch_url)
    redrive = Redrive(
        store=pipeline.store,
        targets=pipeline.targets,
        dlq=dlq,
        parking=parking,
        readback=readback,
        binding=binding,
        max_attempts=options.max_attempts,
        dry_run=options.dry_run,
        policy=pipeline.policy,
        time_budget=settings.time_budget,
        parking_hint=default_parking,
        say=say,
    )
    max_messages = options.max_messages
    from ..progress import Progress

    total = min(waiting, max_messages) if max_messages else waiting
    progress = Progress("redrive", total or None, unit="messages", enabled=options.progress)
    try:
        summary = redrive.run(max_messages, progress)
    finally:
        progress.close()
    log.info("redrive_done", queue_url=dlq_url, dry_run=summary.dry_run, stopped=summary.stopped or None,
             ms=round((time.perf_counter() - started) * 1000, 1), **summary.counts())
    return summary
