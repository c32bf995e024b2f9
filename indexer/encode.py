"""JSON bytes for Elasticsearch, keeping every digit of exact decimals."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson


def _exact(value: Any) -> orjson.Fragment:
    if isinstance(value, Decimal):
        # str() of a finite Decimal is always a valid JSON number, with every digit.
        return orjson.Fragment(str(value))
    raise TypeError(f"cannot serialize {type(value).__name__} to JSON")


def dumps(value: Any) -> bytes:
    """Compact JSON bytes; Decimals are written with all their digits, never rounded."""
    return orjson.dumps(value, default=_exact)
