"""Secrets out of text: the one place URLs lose their userinfo before a message or a log.

Pure. ``url`` is for a URL about to be shown; ``text`` is the second line of defence the log
processor (``indexer.logs``) applies to every string it writes.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,20}://)[^/\s@]{1,512}@")
_AUTH_VALUE = re.compile(r"(?i)\b(apikey|basic|bearer)(\s+)[a-z0-9+/=._~-]{8,}")
#: Field names whose value is a secret whatever it looks like.
_SECRET_FIELD = re.compile(r"(?i)(password|passwd|secret|api_?key|token|authorization|credential)")


def url(text: str) -> str:
    """``text`` with the userinfo (``user:password@``) of any URL in it masked."""
    return _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)


def text(value: str) -> str:
    """``value`` with URL userinfo and Authorization header values masked."""
    return _AUTH_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", url(value))


def field(name: str, value: Any) -> Any:
    """A log field's value, masked when its name says it holds a secret or when it is text
    holding a known secret shape."""
    if _SECRET_FIELD.search(name) and value not in (None, "", False):
        return MASK
    if isinstance(value, str):
        return text(value)
    return value
