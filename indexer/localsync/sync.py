"""Local sync: Lambda's event source mapping for a DynamoDB stream, run on one machine.

Reads the table's stream through the Streams API and calls the same handler Lambda calls, with
the same event shape, batching, partial-batch handling, bisect, retry and record-age limits and
on-failure messages (the rules live in :mod:`indexer.localsync.esm`). One shard at a time, in sequence
order, parents before children; a checkpoint per shard in a state file after every batch.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import structlog

from .checkpoints import TRIM_HORIZON, Checkpoints, ShardState
from .delivery import Deliverer, Totals, backoff
from ..errors import IndexerError, RetryableError, SettingsError
from .esm import MappingConfig, StreamRecord, take_batch
from .figures import LiveFigures
from .lambdalike import Handler, OnFailureQueue, check_indexer_settings, load_handler
from .shards import Shard, ready_shards
from .streamreader import (
    MAX_READ, ShardReader, StreamsApi, account_of, aws_client, aws_errors, describe_shards,
    open_stream, region_of,
)

log = structlog.get_logger("indexer.localsync.sync")

DEFAULT_HANDLER = "indexer.handler:handler"
DEFAULT_STATE = Path(".state/local-sync.json")
#: How often the shard list is read again (DynamoDB rolls shards over every few hours).
SHARD_REFRESH_SECONDS = 60.0
#: With ``once``, give up after this many failed reads in a row.
ONCE_READ_ATTEMPTS = 5


@dataclass(frozen=True)
class SyncOptions:
    table: str
    #: ``module:function``, or the function itself.
    handler: str | Handler = DEFAULT_HANDLER
    state: Path = DEFAULT_STATE
    starting_position: str = TRIM_HORIZON
    mapping: MappingConfig = field(default_factory=MappingConfig)
    #: SQS queue URL of the on-failure destination; None: discarded batches are only logged.
    on_failure: str | None = None
    function_name: str = "local-sync"
    function_timeout: float = 60.0
    #: Lambda polls each shard four times a second.
    poll_interval: float = 0.25
    once: bool = False
    stop_after: float | None = None
    progress: bool = False
    #: Print the handler's metrics every this many seconds on stderr (0: never).
    metrics_every: float = 0.0


@dataclass
class _Consumer:
    shard: Shard
    state: ShardState
    reader: ShardReader
    buffer: deque[StreamRecord] = field(default_factory=deque)
    buffered_since: float = 0.0
    #: The last read came back short: the shard has nothing more right now.
    caught_up: bool = False

    @property
    def idle(self) -> bool:
        return not self.buffer and (self.caught_up or self.reader.closed)


class LocalSync:
    """Delivers one stream's records to a handler until stopped (or drained, with ``once``)."""

    def __init__(
        self, options: SyncOptions, streams: StreamsApi, stream_arn: str, handler: Handler,
        checkpoints: Checkpoints, on_failure: OnFailureQueue | None = None,
        stop: threading.Event | None = None, clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.options = options
        self.config = options.mapping
        self.streams = streams
        self.stream_arn = stream_arn
        self.checkpoints = checkpoints
        self.stop = stop or threading.Event()
        self.totals = Totals()
        self.deliverer = Deliverer(
            handler=handler, config=options.mapping, stream_arn=stream_arn,
            function_name=options.function_name,
            function_arn=f"arn:aws:lambda:{region_of(stream_arn)}:{account_of(stream_arn)}:function:{options.function_name}",
            function_timeout=options.function_timeout, on_failure=on_failure, stop=self.stop,
            clock=clock or (lambda: datetime.now(timezone.utc)), retry_base=options.poll_interval, totals=self.totals,
        )
        self.consumers: dict[str, _Consumer] = {}
        self._first_run = not checkpoints.knows(stream_arn)
        self._refreshed = 0.0
        self._progress: Any = None
        self.figures: LiveFigures | None = None

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> Totals:
        # A timer, not a check between batches: it also cuts short a batch's retry waits.
        timer = threading.Timer(self.options.stop_after, self.stop.set) if self.options.stop_after else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        failed_reads = 0
        self._progress = _progress_bar(self.options.progress)
        try:
            while not self.stop.is_set():
                try:
                    if time.monotonic() - self._refreshed >= SHARD_REFRESH_SECONDS:
                        self.refresh()
                    worked = self.pass_over_shards()
                    failed_reads = 0
                except RetryableError as exc:
                    failed_reads += 1
                    log.warning("stream_unreadable", error=str(exc), attempt=failed_reads)
                    if self.options.once and failed_reads >= ONCE_READ_ATTEMPTS:
                        raise IndexerError(f"gave up reading the stream: {exc}") from None
                    self.stop.wait(backoff(self.options.poll_interval, failed_reads))
                    continue
                if self.options.once and not worked and all(c.idle for c in self.consumers.values()):
                    break
                if self.figures is not None:
                    self.figures.tick()
                if not worked:
                    self.stop.wait(self.options.poll_interval)
        finally:
            if timer is not None:
                timer.cancel()
            if self.figures is not None:
                self.figures.tick(force=True)
            if self._progress is not None:
                self._progress.close()
        return self.totals

    def refresh(self) -> None:
        """Read the shard list; start consumers for shards whose parents are done."""
        shards = describe_shards(self.streams, self.stream_arn)
        states = self.checkpoints.shards(self.stream_arn)
        listed = {shard.id for shard in shards}
        for shard in shards:
            if shard.id not in states:
                # Shards there at the first start begin at the starting position; any shard
                # seen later was created after we started, so it is read from its beginning.
                start = self.options.starting_position if self._first_run else TRIM_HORIZON
                states[shard.id] = ShardState(start=start)
        for shard_id in [s for s, state in states.items() if state.finished and s not in listed]:
            del states[shard_id]  # trimmed from the stream; its children no longer wait for it
        self._first_run = False
        self.checkpoints.save()
        finished = {shard_id for shard_id, state in states.items() if state.finished}
        for shard in ready_shards(shards, finished):
            if shard.id not in self.consumers:
                state = states[shard.id]
                reader = ShardReader(self.streams, self.stream_arn, shard.id, state.checkpoint, state.start)
                reader.take_iterator()  # now: a LATEST shard starts at what it holds when we start
                self.consumers[shard.id] = _Consumer(shard, state, reader)
                log.info("shard_started", shard_id=shard.id, after=state.checkpoint,
                         start=None if state.checkpoint else state.start)
        self._refreshed = time.monotonic()

    def pass_over_shards(self) -> bool:
        """One poll of every ready shard; True when the function was invoked."""
        worked = False
        for consumer in list(self.consumers.values()):
            if self.stop.is_set():
                break
            worked |= self.poll(consumer)
            if consumer.reader.closed and not consumer.buffer and not self.stop.is_set():
                consumer.state.finished = True
                self.checkpoints.save()
                del self.consumers[consumer.shard.id]
                log.info("shard_finished", shard_id=consumer.shard.id)
                self._refreshed = 0.0  # its children may be ready now
        return worked

    def poll(self, consumer: _Consumer) -> bool:
        """Read what the shard has; invoke with a batch once it is full or the window is over."""
        size = self.config.batch_size
        while not consumer.reader.closed and len(consumer.buffer) < size:
            wanted = min(size - len(consumer.buffer), MAX_READ)
            records = consumer.reader.read(wanted)
            if records and not consumer.buffer:
                consumer.buffered_since = time.monotonic()
            consumer.buffer.extend(records)
            consumer.caught_up = len(records) < wanted
            if consumer.caught_up:
                break
        if not consumer.buffer:
            return False
        window = self.config.maximum_batching_window
        waiting = time.monotonic() - consumer.buffered_since < window
        if len(consumer.buffer) < size and not consumer.reader.closed and waiting and not self.options.once:
            return False
        self.deliver(consumer, take_batch(consumer.buffer, size))
        if consumer.buffer:
            consumer.buffered_since = time.monotonic()
        return True

    def deliver(self, consumer: _Consumer, batch: list[StreamRecord]) -> None:
        def checkpoint(sequence: str, acknowledged: int) -> None:
            consumer.state.checkpoint = sequence
            self.checkpoints.save()
            self.totals.acknowledged += acknowledged
            if self._progress is not None:
                self._progress.update(acknowledged)

        self.deliverer.deliver(consumer.shard.id, batch, checkpoint)


def _progress_bar(wanted: bool) -> Any:
    import sys

    if not wanted or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(unit=" records", desc="local sync", file=sys.stderr)


def run(options: SyncOptions, stop: threading.Event | None = None) -> Totals:
    """Build the clients and state for ``options`` and sync until stopped (or drained)."""
    problem = options.mapping.problem()
    if problem:
        raise SettingsError(problem)
    if isinstance(options.handler, str):
        handler = load_handler(options.handler)
        if options.handler == DEFAULT_HANDLER:
            check_indexer_settings()
    else:
        handler = options.handler
    dynamodb = aws_client("dynamodb")
    stream_arn, view_type = open_stream(dynamodb, options.table)
    if options.handler == DEFAULT_HANDLER and view_type not in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES"):
        raise SettingsError(f"table {options.table!r} streams {view_type}: the indexer needs NEW_IMAGE or NEW_AND_OLD_IMAGES")
    streams = aws_client("dynamodbstreams")
    on_failure = None
    if options.on_failure:
        if options.on_failure.endswith(".fifo"):
            raise SettingsError("--on-failure must be a standard SQS queue: Lambda does not send to FIFO queues")
        sqs = aws_client("sqs")
        with aws_errors("SQS", sqs):
            sqs.get_queue_attributes(QueueUrl=options.on_failure, AttributeNames=["QueueArn"])
        on_failure = OnFailureQueue(options.on_failure, sqs)
    checkpoints = Checkpoints(options.state).open()
    from .. import handler as project

    listener = None
    try:
        sync = LocalSync(options, streams, stream_arn, handler, checkpoints, on_failure, stop)
        if options.metrics_every > 0:
            sync.figures = LiveFigures(options.metrics_every, _terminal_line)
            listener = sync.figures.add
            project.listeners.append(listener)
        with aws_errors("DynamoDB Streams", streams):
            sync.refresh()
        log.info("local_sync_started", table=options.table, stream_arn=stream_arn, state=str(options.state),
                 handler=options.handler if isinstance(options.handler, str) else repr(options.handler),
                 shards=len(sync.consumers), **asdict(options.mapping))
        totals = sync.run()
        log.info("local_sync_stopped", **asdict(totals))
        return totals
    finally:
        if listener is not None:
            project.listeners.remove(listener)
        checkpoints.close()


def _terminal_line(text: str) -> None:
    """A line on stderr, above the progress bar if there is one."""
    import sys

    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr)
