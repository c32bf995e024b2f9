"""``python -m indexer sync``: local sync, Lambda's event source mapping run on one machine.

A thin shell: parse flags into :class:`SyncOptions`, install signal handlers, call
:func:`indexer.localsync.sync.run`, map the outcome to an exit code (``indexer.cliutil``: 0 stopped
cleanly, 1 failed while running, 2 bad flags or settings, 3 search cluster unreachable, 130
interrupted).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

from .. import logs
from .checkpoints import LATEST, TRIM_HORIZON
from .esm import MAX_BATCH_SIZE, MappingConfig
from .sync import SyncOptions
from ..cliutil import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Parser, epilog, number, options_from, report_failure
from ..errors import IndexerError, SettingsError
from .. import settings

PROG = "python -m indexer"


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Local tools of the DynamoDB Streams -> Elasticsearch indexer.",
        epilog="Run '%(prog)s sync --help' for the flags of local sync.",
    )
    commands = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sync = commands.add_parser(
        "sync",
        help="read a table's DynamoDB stream and feed the handler, as Lambda's event source mapping does",
        description=(
            "Read a table's DynamoDB stream through the Streams API (on whatever endpoint boto3 is "
            "pointed at: AWS_ENDPOINT_URL for moto server or DynamoDB Local) and call the handler with "
            "Lambda-shaped events, with the event source mapping's batching, partial batch responses, "
            "bisect, retry and record-age limits and on-failure messages. Checkpoints per shard in "
            "--state, so a restart resumes after the last processed record. Runs until SIGINT/SIGTERM "
            "(finishing the current invocation) unless --once or --stop-after. The project's handler "
            "reads its settings from the environment (ELASTICSEARCH_URL, DLQ_URL, INDEX_NAME, ...)."
        ),
        epilog=epilog({EXIT_OK: "stopped cleanly", 1: "failed while running"}),
    )
    where = sync.add_argument_group("what to read and call")
    where.add_argument("--table", help="DynamoDB table whose stream is read (default: TABLE_NAME)")
    where.add_argument("--handler", default=SyncOptions.handler, metavar="MODULE:FUNCTION",
                       help="function to invoke (default: %(default)s)")
    where.add_argument("--state", type=Path, default=SyncOptions.state, metavar="FILE",
                       help="checkpoint file, written atomically after every batch (default: %(default)s)")
    where.add_argument("--starting-position", choices=(TRIM_HORIZON, LATEST), default=SyncOptions.starting_position,
                       help="where shards without a checkpoint start on the first run (default: %(default)s)")

    mapping = sync.add_argument_group("event source mapping settings (Lambda's defaults)")
    mapping.add_argument("--batch-size", type=number(int, 1), default=MappingConfig.batch_size,
                         help=f"BatchSize: most records per invocation, up to {MAX_BATCH_SIZE} (default: %(default)s)")
    mapping.add_argument("--maximum-batching-window", type=number(float, 0), default=MappingConfig.maximum_batching_window, metavar="SECONDS",
                         help="MaximumBatchingWindowInSeconds: wait up to this long to fill a batch (default: %(default)g)")
    mapping.add_argument("--report-batch-item-failures", action=argparse.BooleanOptionalAction,
                         default=MappingConfig.report_batch_item_failures,
                         help="FunctionResponseTypes=[ReportBatchItemFailures]: resume from the lowest failed "
                              "record the function reports (default: on, the indexer's handler reports them)")
    mapping.add_argument("--bisect-batch-on-function-error", action=argparse.BooleanOptionalAction,
                         default=MappingConfig.bisect_batch_on_function_error,
                         help="BisectBatchOnFunctionError: split a failing batch in two before retrying (default: off)")
    mapping.add_argument("--maximum-retry-attempts", type=number(int, -1), default=MappingConfig.maximum_retry_attempts, metavar="N",
                         help="MaximumRetryAttempts: retries before a batch is discarded, -1 infinite (default: %(default)s)")
    mapping.add_argument("--maximum-record-age", type=number(int, -1), default=MappingConfig.maximum_record_age, metavar="SECONDS",
                         help="MaximumRecordAgeInSeconds: discard older records, -1 infinite (default: %(default)s)")
    mapping.add_argument("--on-failure", metavar="QUEUE_URL",
                         help="DestinationConfig.OnFailure: SQS queue that gets the metadata of discarded batches "
                              "(default: none, discarded batches are only logged)")
    mapping.add_argument("--function-name", default=SyncOptions.function_name,
                         help="function name in the context and in on-failure messages (default: %(default)s)")
    mapping.add_argument("--function-timeout", type=number(float, 1), default=SyncOptions.function_timeout, metavar="SECONDS",
                         help="the time the handler is told it has per invocation (default: %(default)g)")

    running = sync.add_argument_group("running")
    running.add_argument("--poll-interval", type=number(float, 0.01), default=SyncOptions.poll_interval, metavar="SECONDS",
                         help="wait between reads of an idle stream; Lambda polls 4 times a second (default: %(default)g)")
    running.add_argument("--once", action="store_true", help="deliver what the stream holds now, then exit")
    running.add_argument("--stop-after", type=number(float, 0), metavar="SECONDS",
                         help="stop after this long (finishing the current batch)")
    running.add_argument("--no-progress", action="store_true", help="no progress counter, even on a terminal")
    running.add_argument("--metrics-every", type=number(float, 0), metavar="SECONDS",
                         help="print the handler's metrics (records by outcome, replication lag, bulk latency) "
                              "on stderr every this many seconds; 0 never (default: 5 on a terminal, else 0)")
    return p


def _stop_on_signals(stop: threading.Event) -> dict[int, Any]:
    """First SIGINT/SIGTERM: finish the current invocation, save the checkpoint, exit. Second:
    now. Returns the handlers it replaced."""

    def handle(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    return {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}


def _metrics_every(flag: float | None) -> float:
    """``--metrics-every``, or its default: every 5 s on a terminal, never otherwise (a log file
    has the handler's EMF lines already)."""
    if flag is not None:
        return flag
    return 5.0 if sys.stderr.isatty() else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command != "sync":
        print(f"{PROG}: error: a command is required: sync (see {PROG} --help)", file=sys.stderr)
        return EXIT_USAGE
    from . import sync as localsync

    try:
        logs.configure(settings.log_level())
    except SettingsError as exc:
        return report_failure(f"{PROG} sync", exc)
    table = args.table or settings.table_name()
    if not table:
        print(f"{PROG} sync: error: TABLE_NAME is required: set it or pass --table", file=sys.stderr)
        return EXIT_USAGE
    options = options_from(SyncOptions, args, table=table, mapping=options_from(MappingConfig, args),
                           progress=not args.no_progress, metrics_every=_metrics_every(args.metrics_every))
    stop = threading.Event()
    previous = _stop_on_signals(stop)
    try:
        localsync.run(options, stop)
    except IndexerError as exc:
        return report_failure(f"{PROG} sync", exc)
    except KeyboardInterrupt:
        print(f"{PROG} sync: interrupted; the checkpoint is at the last fully processed record", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
