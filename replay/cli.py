"""``python -m replay --full | --verify | --redrive``: a thin shell around the replay modules.

Parses flags, builds settings, calls the operation, maps its outcome to an exit code:
0 success (or in sync), 1 the operation found drift or left failures, 2 bad flags or settings
(one line on stderr naming the flag or variable).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from indexer.errors import ClusterError, IndexerError, SettingsError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m replay",
        description=(
            "Rebuild, audit or repair the Elasticsearch index of a DynamoDB table. "
            "Settings come from the environment (TABLE_NAME, ELASTICSEARCH_URL, INDEX_NAME, DLQ_URL, ...); "
            "flags override them."
        ),
        epilog="Exit status: 0 success or in sync, 1 drift found or records left failing, 2 bad flags or settings.",
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--full", action="store_true", help="rebuild the index from a scan of the table, then swap the alias")
    mode.add_argument("--verify", action="store_true", help="compare the table with the alias and report drift")
    mode.add_argument("--redrive", action="store_true", help="re-apply the records in the dead-letter queue")
    mode.add_argument("--list-orphans", action="store_true", help="list physical indices left by interrupted rebuilds")

    common = p.add_argument_group("where")
    common.add_argument("--table", help="DynamoDB table (default: TABLE_NAME)")
    common.add_argument("--index", help="alias users search (default: INDEX_NAME, else the table name lower-cased)")
    common.add_argument("--elasticsearch-url", help="cluster URL (default: ELASTICSEARCH_URL)")
    common.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")

    full = p.add_argument_group("--full")
    full.add_argument("--segments", type=_positive_int, default=4, help="parallel scan segments (default 4)")
    full.add_argument("--bulk-size", type=_positive_int, default=1000, help="documents per bulk request (default 1000)")
    full.add_argument("--rate", type=_positive_float, help="read at most this many items per second")
    full.add_argument("--mapping", help="JSON file with settings and mappings for the new index")
    full.add_argument("--keep-old", action="store_true", help="keep the previous index after the swap")
    full.add_argument("--migrate", action="store_true",
                      help="when INDEX_NAME is a concrete index, rebuild behind an alias of that name and delete the index")
    full.add_argument("--clean-orphans", action="store_true", help="delete indices left by interrupted rebuilds first")

    verify = p.add_argument_group("--verify")
    verify.add_argument("--fix", action="store_true", help="repair the drift found, through the ordering guard")
    verify.add_argument("--sample", type=_positive_int, default=10, help="keys to show per kind of drift (default 10)")

    redrive = p.add_argument_group("--redrive")
    redrive.add_argument("--queue-url", help="dead-letter queue (default: DLQ_URL)")
    redrive.add_argument("--max-messages", type=_positive_int, help="stop after this many messages")
    redrive.add_argument("--max-attempts", type=_positive_int, default=5,
                         help="after this many failed attempts a message moves to the parking queue (default 5)")
    redrive.add_argument("--parking-queue-url",
                         help="queue for messages past --max-attempts and unreadable ones (default: PARKING_QUEUE_URL, "
                              "else DLQ_URL's queue with -parking appended, if that queue exists)")
    redrive.add_argument("--dry-run", action="store_true", help="say what would happen per message, change nothing")
    return p


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text!r}")
    return value


def environment(args: argparse.Namespace) -> dict[str, str]:
    """The environment with the flags that override it applied."""
    env = dict(os.environ)
    for flag, name in (("table", "TABLE_NAME"), ("index", "INDEX_NAME"),
                       ("elasticsearch_url", "ELASTICSEARCH_URL"), ("queue_url", "DLQ_URL")):
        value = getattr(args, flag, None)
        if value:
            env[name] = value
    return env


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.full:
            from replay.full import run as operation
        elif args.verify:
            from replay.verify import run as operation
        elif args.redrive:
            from replay.redrive.command import run as operation
        else:
            from replay.full import list_orphans as operation
        return operation(args, environment(args))
    except (SettingsError, ClusterError) as exc:
        print(f"python -m replay: error: {exc}", file=sys.stderr)
        return 2
    except IndexerError as exc:
        print(f"python -m replay: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        what = "the alias still points at the complete index" if args.full else "nothing was left half done"
        print(f"python -m replay: interrupted; {what}", file=sys.stderr)
        return 130
