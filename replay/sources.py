"""Where a rebuild reads: the units of ``--source scan`` or ``--source export``, and how many
items they must add up to (an export's manifest says; a live table's count is only an estimate)."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any, Callable

import structlog

from indexer import aws
from indexer.errors import SettingsError

from . import export as exports
from .units import Unit, scan_units
from .wiring import Wiring

log = structlog.get_logger("replay.sources")


def s3_client() -> Any:
    """S3 for export files: long reads (a data file is up to some hundreds of MB)."""
    return aws.client("s3", read_timeout=300)


def check_flags(args: Any) -> None:
    """Flags that only make sense together, checked before anything is created."""
    # The Step Functions engine exports into its own rebuild bucket unless told otherwise.
    if getattr(args, "source", "scan") == "export" and not getattr(args, "export_bucket", None) \
            and getattr(args, "engine", "local") != "stepfunctions":
        raise SettingsError("--source export needs --export-bucket (the S3 bucket the export is written to)")


def check_table(args: Any, w: Wiring) -> None:
    """What the source needs of the table, checked before an index is created."""
    if getattr(args, "source", "scan") == "export":
        exports.check_point_in_time(w.dynamodb, w.table.name)


def planned(args: Any, w: Wiring, stop: threading.Event,
            say: Callable[[str], None]) -> tuple[list[Unit], int | None]:
    """The units to load and, for an export, the exact item count they hold.

    Called after the rebuild target is announced: an export's time is *now*, so every change after
    it reaches the new index through the live path."""
    if getattr(args, "source", "scan") != "export":
        return list(scan_units(args.segments)), None
    arn = table_arn(w)
    started = exports.start(w.dynamodb, arn, args.export_bucket, args.export_prefix, args.export_kms_key,
                            datetime.now(timezone.utc))
    say(f"exporting {w.table.name!r} to s3://{args.export_bucket}/{args.export_prefix or ''} "
        f"({started['ExportArn']})")
    log.info("export_started", export=started["ExportArn"], bucket=args.export_bucket)
    completed = exports.wait(w.dynamodb, started["ExportArn"], stop, args.export_poll)
    s3 = s3_client()
    units, _ = exports.plan(s3, completed)
    expected = sum(unit.item_count for unit in units)
    say(f"export complete: {len(units)} files, {expected} items")
    return list(units), expected


def table_arn(w: Wiring) -> str:
    return w.dynamodb.describe_table(TableName=w.table.name)["Table"]["TableArn"]
