"""Document ids derived from an item's key attributes: deterministic, readable, unambiguous.

The id is the key values in attribute-name order, joined by ``|``; inside a value ``\\``, ``|``
and ``#`` are escaped with a backslash, so no two keys give the same text. Numbers are written
in canonical form (DynamoDB treats ``1.50`` and ``1.5`` as one key), binary values as base64.
An id longer than Elasticsearch's 512-byte limit becomes ``#`` + the SHA-256 of that text: no
escaped id starts with an unescaped ``#``, so hashed ids can never collide with plain ones.
"""

from __future__ import annotations

import hashlib
from decimal import Context, Decimal
from typing import Any, Mapping

from .convert import binary, number
from .errors import ConversionError

MAX_ID_BYTES = 512
_EXACT = Context(prec=200)
_ESCAPES = str.maketrans({"\\": "\\\\", "|": "\\|", "#": "\\#"})


def _key_text(value: Any, name: str) -> str:
    if type(value) is not dict or len(value) != 1:
        raise ConversionError(f"Keys.{name}", "a key must be one of S, N or B")
    ((tag, inner),) = value.items()
    if tag == "S":
        if type(inner) is not str or not inner:
            raise ConversionError(f"Keys.{name}", "an S key must be a non-empty string")
        return inner
    if tag == "N":
        exact = number(inner, f"Keys.{name}")
        if isinstance(exact, Decimal):
            # normalize() under the default context would round to 28 digits: two different
            # 38-digit keys must never share an id.
            return format(exact.normalize(_EXACT), "f")
        return repr(exact) if isinstance(exact, float) else str(exact)
    if tag == "B":
        text = binary(inner, f"Keys.{name}")
        if not text:
            raise ConversionError(f"Keys.{name}", "a B key must not be empty")
        return text
    raise ConversionError(f"Keys.{name}", f"a key must be S, N or B, not {tag[:20]!r}")


def document_id(keys: Mapping[str, Any]) -> str:
    """The Elasticsearch ``_id`` for an item, from its ``Keys`` (partition and optional sort key)."""
    if type(keys) is dict and len(keys) == 1:
        # The common case, a single string key with nothing to escape, short and ASCII (so its
        # UTF-8 length is its length): the id is the text itself, as the general path finds.
        for value in keys.values():
            if type(value) is dict and len(value) == 1:
                text = value.get("S")
                if (type(text) is str and text and len(text) <= MAX_ID_BYTES and text.isascii()
                        and "\\" not in text and "|" not in text and "#" not in text):
                    return text
    return escaped_id(keys)


def escaped_id(keys: Mapping[str, Any]) -> str:
    """:func:`document_id` for any keys, by the general rule (escape, join, hash when long)."""
    if type(keys) is not dict or not keys:
        raise ConversionError("Keys", "must be a non-empty object of key attributes")
    if len(keys) > 2:
        raise ConversionError("Keys", f"a table key has at most 2 attributes, got {len(keys)}")
    text = "|".join(
        _key_text(keys[name], name).translate(_ESCAPES) for name in sorted(keys)
    )
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConversionError("Keys", "a key holds text that is not valid Unicode") from exc
    if len(encoded) > MAX_ID_BYTES:
        return "#" + hashlib.sha256(encoded).hexdigest()
    return text
