"""``python -m replay --full | --verify | --redrive | --list-orphans``: the shell around the operations.

Parses flags into one options object per mode (``FullOptions``, ``VerifyOptions``,
``RedriveOptions``), calls the operation, prints what it returns, and maps its outcome or its
exception to an exit code (``indexer.cliutil``). Nothing else in ``replay`` prints.

To add a flag to a mode: add a field to that mode's options object and a flag whose ``dest``
is the field's name, with ``modes=`` naming the modes it belongs to; it is refused (exit 2)
with any other mode.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence, TypeVar

from indexer.cliutil import (
    EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Parser, epilog, options_from, positive_float, positive_int, report_failure,
)
from indexer.errors import IndexerError

T = TypeVar("T")
PROG = "python -m replay"
FULL, VERIFY, REDRIVE, LIST_ORPHANS = "full", "verify", "redrive", "list_orphans"
MODES = (FULL, VERIFY, REDRIVE, LIST_ORPHANS)


class _ModeFlags:
    """Adds flags to a group and remembers which modes each belongs to."""

    def __init__(self) -> None:
        #: dest -> (the flag as typed, the modes it belongs to)
        self.owners: dict[str, tuple[str, tuple[str, ...]]] = {}

    def add(self, group: Any, flag: str, modes: tuple[str, ...], **kwargs: Any) -> None:
        # No default in the parser: None means "not given", so a flag of another mode can be
        # refused; the options objects hold the defaults.
        action = group.add_argument(flag, default=None, **kwargs)
        self.owners[action.dest] = (flag, modes)

    def foreign(self, args: argparse.Namespace, mode: str) -> str | None:
        """The first flag given that does not belong to ``mode``, as an error message."""
        for dest, (flag, modes) in self.owners.items():
            if getattr(args, dest) is not None and mode not in modes:
                return f"{flag} belongs to {' / '.join('--' + m.replace('_', '-') for m in modes)}, not --{mode.replace('_', '-')}"
        return None


def parser() -> argparse.ArgumentParser:
    from replay.full import FullOptions
    from replay.redrive.command import RedriveOptions
    from replay.verify import VerifyOptions

    p = Parser(
        prog=PROG,
        description=(
            "Rebuild, audit or repair the Elasticsearch index of a DynamoDB table. "
            "Settings come from the environment (TABLE_NAME, ELASTICSEARCH_URL, INDEX_NAME, DLQ_URL, ...); "
            "flags override them."
        ),
        epilog=epilog({EXIT_OK: "success or in sync"}),
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--full", action="store_true", help="rebuild the index from a scan of the table, then swap the alias")
    mode.add_argument("--verify", action="store_true", help="compare the table with the alias and report drift")
    mode.add_argument("--redrive", action="store_true", help="re-apply the records in the dead-letter queue")
    mode.add_argument("--list-orphans", action="store_true", help="list physical indices left by interrupted rebuilds")

    common = p.add_argument_group("where (every mode)")
    common.add_argument("--table", help="DynamoDB table (default: TABLE_NAME)")
    common.add_argument("--index", help="alias users search (default: INDEX_NAME, else the table name lower-cased)")
    common.add_argument("--elasticsearch-url", help="cluster URL (default: ELASTICSEARCH_URL)")
    common.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")

    flags = _ModeFlags()
    # Output, not an option of the operations: the shell prints the result's metrics line.
    flags.add(common, "--metrics", (FULL, VERIFY, REDRIVE), action="store_true",
              help="--full, --verify, --redrive: also print the summary as one CloudWatch embedded-metric-format "
                   "line on stdout (namespace METRICS_NAMESPACE, dimensions Alias and Command)")
    full = p.add_argument_group("--full")
    flags.add(full, "--segments", (FULL, VERIFY), type=positive_int,
              help=f"parallel scan segments, --full and --verify (default {FullOptions.segments})")
    flags.add(full, "--bulk-size", (FULL,), type=positive_int,
              help=f"documents per bulk request (default {FullOptions.bulk_size})")
    flags.add(full, "--rate", (FULL,), type=positive_float, help="read at most this many items per second")
    flags.add(full, "--mapping", (FULL,), help="JSON file with settings and mappings for the new index")
    flags.add(full, "--keep-old", (FULL,), action="store_true", help="keep the previous index after the swap")
    flags.add(full, "--migrate", (FULL,), action="store_true",
              help="when INDEX_NAME is a concrete index, rebuild behind an alias of that name and delete the index")
    flags.add(full, "--clean-orphans", (FULL, LIST_ORPHANS), action="store_true",
              help="delete indices left by interrupted rebuilds (--full always does first; "
                   "with --list-orphans, delete them and list what remains)")
    flags.add(full, "--source", (FULL,), choices=("scan", "export"),
              help="scan: parallel Scan with consistent reads (uses read capacity); export: "
                   "ExportTableToPointInTime to S3 (needs point-in-time recovery; no read capacity) "
                   f"(default {FullOptions.source})")
    flags.add(full, "--engine", (FULL,), choices=("local", "stepfunctions"),
              help="local: a pool of worker processes here; stepfunctions: start the rebuild state machine "
                   f"and follow it (default {FullOptions.engine})")
    flags.add(full, "--workers", (FULL,), type=positive_int,
              help="local engine: worker processes; 1 runs in this process (default: REPLAY_WORKERS, else the cores)")
    flags.add(full, "--bulk-bytes", (FULL,), type=positive_int,
              help=f"a bulk request is cut at this many bytes (default {FullOptions.bulk_bytes})")
    flags.add(full, "--export-bucket", (FULL,), help="--source export: the S3 bucket the export is written to "
                   "(--engine stepfunctions: default the deployed rebuild bucket, prefix exports/)")
    flags.add(full, "--export-prefix", (FULL,), help="--source export: key prefix in that bucket")
    flags.add(full, "--export-kms-key", (FULL,), help="--source export: KMS key to encrypt the export with (SSE-KMS)")
    flags.add(full, "--state-machine-arn", (FULL,),
              help="--engine stepfunctions: the rebuild state machine (default: REBUILD_STATE_MACHINE_ARN)")
    flags.add(full, "--export-poll", (FULL,), type=positive_float, help=argparse.SUPPRESS)
    flags.add(full, "--follow-poll", (FULL,), type=positive_float, help=argparse.SUPPRESS)

    verify = p.add_argument_group("--verify")
    flags.add(verify, "--fix", (VERIFY,), action="store_true", help="repair the drift found, through the ordering guard")
    flags.add(verify, "--sample", (VERIFY,), type=positive_int,
              help=f"keys to show per kind of drift (default {VerifyOptions.sample})")

    redrive = p.add_argument_group("--redrive")
    flags.add(redrive, "--queue-url", (REDRIVE,), help="dead-letter queue (default: DLQ_URL)")
    flags.add(redrive, "--max-messages", (REDRIVE,), type=positive_int, help="stop after this many messages")
    flags.add(redrive, "--max-attempts", (REDRIVE,), type=positive_int,
              help=f"after this many failed attempts a message moves to the parking queue "
                   f"(default {RedriveOptions.max_attempts})")
    flags.add(redrive, "--parking-queue-url", (REDRIVE,),
              help="queue for messages past --max-attempts and unreadable ones (default: PARKING_QUEUE_URL, "
                   "else DLQ_URL's queue with -parking appended, if that queue exists)")
    flags.add(redrive, "--dry-run", (REDRIVE,), action="store_true",
              help="say what would happen per message, change nothing")
    p.set_defaults(mode_flags=flags)
    return p


def mode_of(args: argparse.Namespace) -> str:
    return next(mode for mode in MODES if getattr(args, mode))


def options(cls: type[T], args: argparse.Namespace) -> T:
    """``cls`` (a mode's options dataclass) from the flags given; the rest keep their defaults."""
    return options_from(cls, args, progress=not args.no_progress)


def environment(args: argparse.Namespace) -> dict[str, str]:
    """The environment with the flags that override it applied (``Settings.from_env`` reads it)."""
    env = dict(os.environ)
    for flag, name in (("table", "TABLE_NAME"), ("index", "INDEX_NAME"),
                       ("elasticsearch_url", "ELASTICSEARCH_URL"), ("queue_url", "DLQ_URL")):
        value = getattr(args, flag, None)
        if value:
            env[name] = value
    return env


def say(line: str) -> None:
    print(line, flush=True)


def run(mode: str, args: argparse.Namespace) -> int:
    """Run the mode's operation, print its result, return its exit code."""
    env = environment(args)
    if mode == FULL:
        from replay import full

        result: Any = full.run(options(full.FullOptions, args), env, say)
        lines, code = result.lines(), EXIT_FAILED if result.failed else EXIT_OK
    elif mode == VERIFY:
        from replay import verify

        result = verify.run(options(verify.VerifyOptions, args), env)
        lines, code = result.lines(), EXIT_OK if result.in_sync() else EXIT_FAILED
    elif mode == REDRIVE:
        from replay.redrive import command
        from replay.redrive.report import text

        result = command.run(options(command.RedriveOptions, args), env, say)
        lines, code = [text(result)], result.exit_code()
    else:
        from replay.full import list_orphans

        lines, code = list_orphans(env, clean=bool(args.clean_orphans)).lines(), EXIT_OK
    if args.metrics:
        from replay.metrics import summary_line

        emf = summary_line(result, env)
        if emf is not None:
            lines.append(emf)
    for line in lines:
        say(line)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    mode = mode_of(args)
    refused = args.mode_flags.foreign(args, mode)
    if refused:
        p.error(refused)
    try:
        return run(mode, args)
    except IndexerError as exc:
        return report_failure(PROG, exc)
    except KeyboardInterrupt:
        what = "the alias still points at the complete index" if mode == FULL else "nothing was left half done"
        print(f"{PROG}: interrupted; {what}", file=sys.stderr)
        return EXIT_INTERRUPTED
