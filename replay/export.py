"""The DynamoDB export source: start ``ExportTableToPointInTime``, wait for it, read AWS's layout.

The layout (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/S3DataExport.Output.html):
``<prefix>/AWSDynamoDB/<export id>/manifest-summary.json`` names ``manifest-files.json``, whose
lines each give one ``data/*.json.gz`` file with its ``itemCount`` and ``md5Checksum`` (base64);
a data file holds one DynamoDB JSON line ``{"Item": {...}}`` per item. Every file is checked
against its checksum and its count before a single document from it counts as loaded.
An export reads no capacity from the table: production traffic is untouched.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import threading
import time
import zlib
from datetime import datetime
from typing import Any, Iterator

import orjson
import structlog

from indexer.errors import ExportError, SettingsError

from .units import ExportUnit

log = structlog.get_logger("replay.export")

#: A manifest is a few lines per data file; anything far bigger is not one.
MANIFEST_MAX_BYTES = 64 * 1024 * 1024
POLL_SECONDS = 10.0


def point_in_time_problem(table: str) -> SettingsError:
    return SettingsError(
        f"--source export needs point-in-time recovery on table {table!r}: enable it with "
        f"`aws dynamodb update-continuous-backups --table-name {table} "
        "--point-in-time-recovery-specification PointInTimeRecoveryEnabled=true`, or use --source scan"
    )


def check_point_in_time(dynamodb: Any, table: str) -> None:
    """Fail before anything is built when the table cannot be exported."""
    from botocore.exceptions import ClientError

    try:
        backups = dynamodb.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    except ClientError as exc:
        raise SettingsError(f"cannot read the backup settings of table {table!r}: "
                            f"{exc.response['Error']['Code']}") from None
    status = (backups.get("PointInTimeRecoveryDescription") or {}).get("PointInTimeRecoveryStatus")
    if status != "ENABLED":
        raise point_in_time_problem(table)


def start(dynamodb: Any, table_arn: str, bucket: str, prefix: str | None, kms_key: str | None,
          at: datetime | None = None) -> dict[str, Any]:
    """Start a full export of the table as of ``at`` (now when None); its ``ExportDescription``.
    A table without point-in-time recovery gets one line saying how to enable it."""
    from botocore.exceptions import ClientError

    request: dict[str, Any] = {"TableArn": table_arn, "S3Bucket": bucket, "ExportFormat": "DYNAMODB_JSON",
                               "ExportType": "FULL_EXPORT"}
    if prefix:
        request["S3Prefix"] = prefix.strip("/")
    if kms_key:
        request.update(S3SseAlgorithm="KMS", S3SseKmsKeyId=kms_key)
    if at is not None:
        request["ExportTime"] = at
    try:
        return dynamodb.export_table_to_point_in_time(**request)["ExportDescription"]
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        table = table_arn.rsplit("/", 1)[-1]
        if code == "PointInTimeRecoveryUnavailableException":
            raise point_in_time_problem(table) from None
        raise SettingsError(f"cannot export table {table!r} to s3://{bucket}: {code}: "
                            f"{exc.response['Error'].get('Message', '')}") from None


def wait(dynamodb: Any, export_arn: str, stop: threading.Event, poll: float = POLL_SECONDS) -> dict[str, Any]:
    """The export's description once it has completed; ExportError when it failed."""
    while True:
        description = dynamodb.describe_export(ExportArn=export_arn)["ExportDescription"]
        status = description.get("ExportStatus")
        if status == "COMPLETED":
            return description
        if status == "FAILED":
            raise ExportError(f"export {export_arn} failed: {description.get('FailureCode')}: "
                              f"{description.get('FailureMessage')}")
        log.info("export_waiting", export=export_arn, status=status)
        if stop.wait(poll):
            raise KeyboardInterrupt


def manifest_key(description: dict[str, Any]) -> str:
    """Where ``manifest-summary.json`` is: DescribeExport's ``ExportManifest``, else AWS's layout."""
    if description.get("ExportManifest"):
        return str(description["ExportManifest"])
    export_id = str(description["ExportArn"]).rsplit("/", 1)[-1]
    prefix = (description.get("S3Prefix") or "").strip("/")
    return f"{prefix + '/' if prefix else ''}AWSDynamoDB/{export_id}/manifest-summary.json"


def summary_of(body: bytes, key: str) -> dict[str, Any]:
    """The parsed ``manifest-summary.json``; refuses ION exports and anything not a manifest."""
    try:
        summary = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ExportError(f"s3 object {key} is not a JSON export manifest ({exc})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("manifestFilesS3Key"), str):
        raise ExportError(f"s3 object {key} is not an export manifest summary (no manifestFilesS3Key)")
    fmt = summary.get("outputFormat", "DYNAMODB_JSON")
    if fmt != "DYNAMODB_JSON":
        raise ExportError(f"export {summary.get('exportArn', key)} is in {fmt} format; only DYNAMODB_JSON "
                          "exports can be loaded: export again with ExportFormat=DYNAMODB_JSON")
    return summary


def units_of(body: bytes, bucket: str, key: str) -> list[ExportUnit]:
    """The data files listed by ``manifest-files.json`` (one JSON object per line), as units."""
    units = []
    for number, line in enumerate(body.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = orjson.loads(line)
            units.append(ExportUnit(bucket, str(entry["dataFileS3Key"]), int(entry["itemCount"]),
                                    str(entry["md5Checksum"])))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ExportError(f"{key} line {number} is not a data file entry ({type(exc).__name__}: {exc})") from None
    return units


def get(s3: Any, bucket: str, key: str, limit: int | None = None, what: str = "an export manifest") -> bytes:
    """The object's bytes; with ``limit``, ExportError when it is larger (``what`` it then is
    not), checked on the declared length and again on what was actually read."""
    from botocore.exceptions import ClientError

    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        raise ExportError(f"cannot read s3://{bucket}/{key}: {exc.response['Error']['Code']}") from None
    if limit is None:
        return obj["Body"].read()
    declared = int(obj.get("ContentLength", 0))
    body = b"" if declared > limit else obj["Body"].read(limit + 1)
    if declared > limit or len(body) > limit:
        raise ExportError(f"s3://{bucket}/{key} is larger than {limit} bytes: not {what}")
    return body


def plan(s3: Any, description: dict[str, Any]) -> tuple[list[ExportUnit], dict[str, Any]]:
    """Units (one per data file) and the summary of a completed export; ExportError on a bad manifest."""
    bucket = description["S3Bucket"]
    key = manifest_key(description)
    summary = summary_of(get(s3, bucket, key, MANIFEST_MAX_BYTES), key)
    files_key = summary["manifestFilesS3Key"]
    units = units_of(get(s3, bucket, files_key, MANIFEST_MAX_BYTES), bucket, files_key)
    listed = sum(unit.item_count for unit in units)
    if "itemCount" in summary and int(summary["itemCount"]) != listed:
        raise ExportError(f"{key} counts {summary['itemCount']} items but {files_key} lists {listed}")
    log.info("export_planned", files=len(units), items=listed, manifest=key)
    return units, summary


def items_of(body: bytes, unit: ExportUnit) -> Iterator[dict[str, Any]]:
    """The items of one data file, checked against the manifest's checksum and count first."""
    digest = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii")
    if digest != unit.md5:
        raise ExportError(f"s3://{unit.bucket}/{unit.key}: md5 {digest} does not match the manifest's {unit.md5}")
    try:
        lines = [line for line in gzip.decompress(body).splitlines() if line.strip()]
    except (OSError, EOFError, zlib.error) as exc:
        raise ExportError(f"s3://{unit.bucket}/{unit.key} is not gzip: {exc}") from None
    if len(lines) != unit.item_count:
        raise ExportError(f"s3://{unit.bucket}/{unit.key} holds {len(lines)} items, the manifest says {unit.item_count}")
    for number, line in enumerate(lines, 1):
        try:
            item = orjson.loads(line)["Item"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ExportError(f"s3://{unit.bucket}/{unit.key} line {number} is not {{\"Item\": ...}} ({exc})") from None
        if not isinstance(item, dict):
            raise ExportError(f"s3://{unit.bucket}/{unit.key} line {number}: Item is not an object")
        yield item


def export_time(description: dict[str, Any]) -> float:
    """The instant the export shows the table at, as epoch seconds (snapshots are as new as this)."""
    value = description.get("ExportTime") or description.get("StartTime")
    if isinstance(value, datetime):
        return value.timestamp()
    return time.time() if value is None else float(value)
