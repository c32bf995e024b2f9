"""Factories for stream records and Lambda events shaped as Lambda delivers them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SAMPLE_EVENTS = Path(__file__).resolve().parent / "data"
STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/Things/stream/2026-11-27T00:00:00.000"
SEQUENCE_BASE = 4421584500000000017450439000  # 28 digits, like AWS's sample


def sample_event(name: str) -> dict[str, Any]:
    """One of the real stream events in tests/data (see its README)."""
    return json.loads((SAMPLE_EVENTS / name).read_text(encoding="utf-8"))


def record(
    event_name: str,
    keys: dict[str, Any],
    new_image: dict[str, Any] | None = None,
    sequence: int = 1,
    old_image: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A stream record; ``sequence`` is an offset added to a realistic 28-digit base."""
    stream: dict[str, Any] = {
        "ApproximateCreationDateTime": 1795737074,
        "Keys": keys,
        "SequenceNumber": str(SEQUENCE_BASE + sequence),
        "SizeBytes": 100,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if new_image is not None:
        stream["NewImage"] = new_image
    if old_image is not None:
        stream["OldImage"] = old_image
    return {
        "eventID": f"id-{sequence}",
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": stream,
        "eventSourceARN": STREAM_ARN,
    }


def put(pk: str, sequence: int, **attributes: Any) -> dict[str, Any]:
    """An INSERT/MODIFY of item ``pk`` with string attributes (and numbers for ints)."""
    image: dict[str, Any] = {"pk": {"S": pk}}
    for name, value in attributes.items():
        image[name] = {"N": str(value)} if isinstance(value, int) else {"S": str(value)}
    return record("MODIFY", {"pk": {"S": pk}}, image, sequence)


def remove(pk: str, sequence: int) -> dict[str, Any]:
    return record("REMOVE", {"pk": {"S": pk}}, None, sequence)


def event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}
