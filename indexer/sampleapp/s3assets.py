"""The sample application: S3 notifications from the ``images-in`` bucket recorded in the table.

Two Lambda handlers share one path: ``created`` (``s3:ObjectCreated:*``) writes an item for the
object, read back with HeadObject for its content type and user metadata; ``deleted``
(``s3:ObjectRemoved:*``) removes it. Items are keyed by object key (attribute ``key``). The
table's stream then carries each change on into the index (live, or through local sync).

S3 delivers notifications at least once and not always in order. Each item stores the event's
``sequencer`` (left-padded, so text order is event order for one key, as S3 documents) and
every write is conditional on it being newer, so a late or repeated event changes nothing.
A late "created" for an object deleted since finds no object (HeadObject 404) and is skipped.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import structlog

from .. import logs
from ..errors import SettingsError
from .. import aws
from .. import settings

log = structlog.get_logger("indexer.sampleapp.s3assets")

#: Width the ``sequencer`` hex string is left-padded to before comparing.
SEQUENCER_WIDTH = 32

_clients: dict[str, Any] = {}
_logs_configured = False


def _client(service: str) -> Any:
    """One boto3 client per service, built on first use and reused while the container is warm."""
    if service not in _clients:
        _clients[service] = aws.client(service)
    return _clients[service]


def reset() -> None:
    """Forget the clients and the log setup (tests; a changed environment)."""
    global _logs_configured
    _clients.clear()
    _logs_configured = False


def _configure_logs() -> None:
    """JSON logs at LOG_LEVEL, configured once per container."""
    global _logs_configured
    if _logs_configured:
        return
    logs.configure(settings.log_level())
    _logs_configured = True


def _table() -> str:
    table = settings.table_name()
    if not table:
        raise SettingsError("TABLE_NAME is required: set it to the table that records the assets")
    return table


def created(event: dict[str, Any], context: Any = None) -> dict[str, int]:
    """``s3:ObjectCreated:*``: record (or refresh) the asset of each object in the event."""
    return _handle(event, _write)


def deleted(event: dict[str, Any], context: Any = None) -> dict[str, int]:
    """``s3:ObjectRemoved:*``: remove the asset of each object in the event."""
    return _handle(event, _remove)


def _handle(event: dict[str, Any], apply: Any) -> dict[str, int]:
    """Apply every record; an error propagates so Lambda retries the event (the writes are
    conditional, so the records that went through are not applied twice)."""
    _configure_logs()
    table = _table()
    counts = {"written": 0, "deleted": 0, "skipped": 0}
    for record in event.get("Records", []):
        notice = notice_of(record)
        outcome = apply(table, notice)
        counts[outcome] += 1
        log.info("asset_" + outcome, key=notice["key"], bucket=notice["bucket"], s3_event=notice["event_name"])
    return counts


def notice_of(record: dict[str, Any]) -> dict[str, str]:
    """The fields of one S3 event record this module uses. S3 URL-encodes object keys in
    notifications (spaces as ``+``), so the key is decoded here."""
    s3 = record["s3"]
    return {
        "bucket": s3["bucket"]["name"],
        "key": unquote_plus(s3["object"]["key"]),
        "sequencer": str(s3["object"].get("sequencer", "")).upper().rjust(SEQUENCER_WIDTH, "0"),
        "event_time": record.get("eventTime", ""),
        "event_name": record.get("eventName", ""),
    }


def _write(table: str, notice: dict[str, str]) -> str:
    from botocore.exceptions import ClientError

    try:
        head = _client("s3").head_object(Bucket=notice["bucket"], Key=notice["key"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return "skipped"  # deleted since: its ObjectRemoved event removes (or removed) the item
        raise
    item = {
        "key": {"S": notice["key"]},
        "bucket": {"S": notice["bucket"]},
        "size": {"N": str(head.get("ContentLength", 0))},
        "content_type": {"S": head.get("ContentType") or "binary/octet-stream"},
        "etag": {"S": str(head.get("ETag", "")).strip('"')},
        "metadata": {"M": {name: {"S": value} for name, value in (head.get("Metadata") or {}).items()}},
        "last_modified": {"S": _iso(head.get("LastModified"))},
        "event_time": {"S": notice["event_time"]},
        "sequencer": {"S": notice["sequencer"]},
    }
    if head.get("VersionId"):
        item["version_id"] = {"S": head["VersionId"]}
    return "written" if _conditional(lambda condition: _client("dynamodb").put_item(
        TableName=table, Item=item, **condition), notice) else "skipped"


def _remove(table: str, notice: dict[str, str]) -> str:
    return "deleted" if _conditional(lambda condition: _client("dynamodb").delete_item(
        TableName=table, Key={"key": {"S": notice["key"]}}, **condition), notice) else "skipped"


def _conditional(call: Any, notice: dict[str, str]) -> bool:
    """Run ``call`` only if no newer (or the same) event for this key was applied already."""
    from botocore.exceptions import ClientError

    condition = {
        "ConditionExpression": "attribute_not_exists(#key) OR attribute_not_exists(#sequencer) OR #sequencer < :sequencer",
        "ExpressionAttributeNames": {"#key": "key", "#sequencer": "sequencer"},
        "ExpressionAttributeValues": {":sequencer": {"S": notice["sequencer"]}},
    }
    try:
        call(condition)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return False
        raise
    return True


def _iso(moment: Any) -> str:
    if isinstance(moment, datetime):
        return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return str(moment or "")


def object_event(
    event_name: str, bucket: str, key: str, *, sequencer: str, size: int = 0, etag: str = "",
    event_time: datetime | None = None, region: str = "us-east-1",
) -> dict[str, Any]:
    """The notification S3 sends for one object (e.g. ``ObjectCreated:Put``,
    ``ObjectRemoved:Delete``): for local runs, where nothing invokes the handlers for us."""
    moment = event_time or datetime.now(timezone.utc)
    obj: dict[str, Any] = {"key": quote_plus(key, safe="/"), "sequencer": sequencer}
    if event_name.startswith("ObjectCreated"):
        obj.update(size=size, eTag=etag)
    return {
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": region,
            "eventTime": moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "eventName": event_name,
            "s3": {
                "s3SchemaVersion": "1.0",
                "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                "object": obj,
            },
        }]
    }
