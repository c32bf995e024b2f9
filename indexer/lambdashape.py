"""Records and items read with boto3, reshaped as Lambda delivers them.

boto3 hands back binary values as bytes and times as datetimes; Lambda's JSON has base64
text and epoch seconds, plus ``eventSourceARN``. Feeding the handler Lambda's shape keeps one
code path for local runs, redrive, the handler's table reads and production.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any


def json_safe(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    if isinstance(value, datetime):
        return int(value.timestamp())
    return value


def lambda_record(record: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """One ``get_records`` record as it appears in a Lambda event."""
    shaped = json_safe(record)
    shaped["eventSourceARN"] = stream_arn
    shaped.setdefault("eventSource", "aws:dynamodb")
    return shaped
