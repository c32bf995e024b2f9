"""DynamoDB AttributeValues (as Lambda delivers them) → JSON-safe Python values, exactly.

Why not boto3's ``TypeDeserializer``: on Lambda events it raises TypeError for binary values
(they arrive base64-encoded, not as bytes) and ``decimal.Inexact`` for 39-digit numbers, and it
returns Decimals and sets that JSON cannot hold.

Numbers (decided here, documented in the README):

* integers within Elasticsearch's ``long`` range become Python ``int`` → JSON integers;
* other numbers become ``float`` when the shortest float text denotes exactly the same decimal
  (``0.1``, ``-17.5``), so nothing is rounded;
* everything else (integers beyond ``long``, decimals with more digits than a double holds)
  stays a ``Decimal`` and is written to JSON with all its digits (see :mod:`indexer.encode`).
  Elasticsearch keeps those digits in ``_source``; only its indexed value is the nearest double.
"""

from __future__ import annotations

import base64
import binascii
import re
from binascii import a2b_base64, b2a_base64
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from .errors import ConversionError

try:
    # The same walk in C for its common values (indexer/_walk.c); absent when not built.
    from . import _walk as _native
except ImportError:  # pragma: no cover - the suite runs with it built (tests/test_convert_native.py)
    _native = None

LONG_MIN = -(2**63)
LONG_MAX = 2**63 - 1

JsonValue = Any  # str | int | float | Decimal | bool | None | list | dict

_PLAIN_INT = re.compile(r"-?[0-9]{1,18}")
#: Linear time: the digits before and after the point cannot trade characters (the old
#: ``[0-9]+\.?[0-9]*`` backtracked quadratically on a long run of digits followed by junk).
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
#: DynamoDB's own limits on numbers: 38 significant digits, magnitude 1E-130 to 1E+126
#: (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/HowItWorks.NamingRulesDataTypes.html).
#: Enforced before any arithmetic: a record that did not come from DynamoDB (a dead letter,
#: a file) can hold ``1e999999999``, whose exact integer never finishes.
MAX_DIGITS = 38
MIN_EXPONENT, MAX_EXPONENT = -130, 125
#: Longest number text taken at all: a 38-digit number written without an exponent at either
#: end of the range, with room for a sign, a point and leading or trailing zeros.
MAX_NUMBER_TEXT = 400


def number(text: Any, path: str = "N") -> int | float | Decimal:
    """The exact JSON-safe value of a DynamoDB number string (see module docstring)."""
    if type(text) is not str:
        raise ConversionError(path, f"N must be a string, got {type(text).__name__}")
    if _PLAIN_INT.fullmatch(text):
        return int(text)
    if len(text) > MAX_NUMBER_TEXT:
        raise ConversionError(path, f"N is {len(text)} characters long, more than a DynamoDB number can be: {text[:40]!r}")
    if not _NUMBER.fullmatch(text):
        raise ConversionError(path, f"N is not a number: {text[:40]!r}")
    try:
        exact = Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid numbers
        raise ConversionError(path, f"N is not a number: {text[:40]!r}") from exc
    problem = _beyond_dynamodb(exact)
    if problem:
        raise ConversionError(path, f"N {text[:40]!r} {problem}")
    if exact == exact.to_integral_value():
        whole = int(exact)
        if LONG_MIN <= whole <= LONG_MAX:
            return whole
        return Decimal(whole)
    as_float = float(exact)
    if Decimal(repr(as_float)) == exact:
        return as_float
    return exact


def _beyond_dynamodb(exact: Decimal) -> str | None:
    """Why ``exact`` is not a number DynamoDB can hold, or None. No arithmetic on the value."""
    if not exact:
        return None
    digits = "".join(map(str, exact.as_tuple().digits)).strip("0")
    if len(digits) > MAX_DIGITS:
        return f"has {len(digits)} significant digits; DynamoDB numbers have at most {MAX_DIGITS}"
    if not MIN_EXPONENT <= exact.adjusted() <= MAX_EXPONENT:
        return f"is outside DynamoDB's range (1E{MIN_EXPONENT} to 1E+{MAX_EXPONENT + 1} in magnitude)"
    return None


def binary(value: Any, path: str = "B") -> str:
    """Canonical base64 text of a binary value given as base64 text (Lambda) or bytes (boto3)."""
    return base64.b64encode(binary_bytes(value, path)).decode("ascii")


def binary_bytes(value: Any, path: str = "B") -> bytes:
    """The raw bytes of a binary value given as base64 text or bytes."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if type(value) is not str:
        raise ConversionError(path, f"B must be base64 text, got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConversionError(path, f"B is not valid base64: {value[:40]!r}") from exc


def _string(value: Any, path: str) -> str:
    if type(value) is not str:
        raise ConversionError(path, f"S must be a string, got {type(value).__name__}")
    return value


def _set(value: Any, path: str, tag: str) -> list:
    if type(value) is not list:
        raise ConversionError(path, f"{tag} must be a list, got {type(value).__name__}")
    return value


def _string_set(value: Any, path: str) -> list[str]:
    items = _set(value, path, "SS")
    for position, item in enumerate(items):
        _string(item, f"{path}[{position}]")
    return sorted(items)


def _number_set(value: Any, path: str) -> list[int | float | Decimal]:
    items = _set(value, path, "NS")
    converted = [number(item, f"{path}[{position}]") for position, item in enumerate(items)]
    # Sort by exact value: a float and a Decimal compare exactly in Python.
    return sorted(converted)


def _binary_set(value: Any, path: str) -> list[str]:
    items = _set(value, path, "BS")
    raw = sorted(binary_bytes(item, f"{path}[{position}]") for position, item in enumerate(items))
    return [base64.b64encode(item).decode("ascii") for item in raw]


def _boolean(value: Any, path: str) -> bool:
    if type(value) is not bool:
        raise ConversionError(path, f"BOOL must be true or false, got {value!r:.40}")
    return value


def _null(value: Any, path: str) -> None:
    if value is not True:
        raise ConversionError(path, f"NULL must be true, got {value!r:.40}")
    return None


def _map(value: Any, path: str) -> dict[str, JsonValue]:
    if type(value) is not dict:
        raise ConversionError(path, f"M must be an object, got {type(value).__name__}")
    return {name: attribute(item, f"{path}.{name}") for name, item in value.items()}


def _list(value: Any, path: str) -> list[JsonValue]:
    if type(value) is not list:
        raise ConversionError(path, f"L must be a list, got {type(value).__name__}")
    return [attribute(item, f"{path}[{position}]") for position, item in enumerate(value)]


_CONVERTERS: dict[str, Callable[[Any, str], JsonValue]] = {
    "S": _string,
    "N": number,
    "B": binary,
    "SS": _string_set,
    "NS": _number_set,
    "BS": _binary_set,
    "BOOL": _boolean,
    "NULL": _null,
    "M": _map,
    "L": _list,
}


def attribute(value: Any, path: str) -> JsonValue:
    """The JSON-safe value of one AttributeValue such as ``{"N": "42"}``."""
    if type(value) is not dict or len(value) != 1:
        raise ConversionError(
            path, "an AttributeValue must be an object with exactly one type key (S, N, B, ...)"
        )
    ((tag, inner),) = value.items()
    converter = _CONVERTERS.get(tag)
    if converter is None:
        raise ConversionError(path, f"unknown DynamoDB type {tag[:20]!r}")
    return converter(inner, path)


def item(image: Any, what: str = "NewImage") -> dict[str, JsonValue]:
    """The JSON-safe document for a whole item image (a map of attribute name → AttributeValue).

    Converted by the fast path below; an image it does not take is converted again by the
    careful path, which gives the same document or the error naming where the bad value is."""
    if type(image) is not dict:
        raise ConversionError(what, f"must be an object, got {type(image).__name__}")
    try:
        try:
            if _native is not None:
                return _native.item(image, _fast)
            return {name: _fast(value) for name, value in image.items()}
        except (_Unusual, ConversionError, ValueError, TypeError):
            return {name: attribute(value, name) for name, value in image.items()}
    except RecursionError:
        # DynamoDB nests at most 32 levels; a record that did not come from it can nest more
        # than Python's stack allows.
        raise ConversionError(what, "nested deeper than a DynamoDB item can be") from None


# The fast path. It returns what the careful path above returns for every value it accepts,
# and raises for every other (then ``item`` runs the careful path). It builds no attribute
# paths (an f-string per value was a third of the time) and does no Decimal arithmetic for
# the numbers that need none. Speed: bench/convert_bench.py; sameness with the careful path
# and with boto3: tests/test_convert_equivalence.py.


class _Unusual(Exception):
    """A value the fast path leaves to the careful path (which accepts or refuses it)."""


#: Plain decimals of at most 15 significant digits (16 characters with the point): such a
#: decimal converts to the double whose shortest text denotes the same decimal (IEEE 754
#: binary64 keeps 15 decimal digits), so ``number`` returns that double.
_PLAIN_DECIMAL = re.compile(r"-?[0-9]+\.[0-9]+")
_SHORT_DECIMAL_LENGTH = 16
#: Up to 18 digits always fit Elasticsearch's long.
_SHORT_INTEGER_LENGTH = 18


def _fast_number(text: Any) -> int | float | Decimal:
    if type(text) is str:
        if text.isdigit():
            if len(text) <= _SHORT_INTEGER_LENGTH and text.isascii():
                return int(text)
        elif _PLAIN_DECIMAL.fullmatch(text):
            value = float(text)
            # Longer texts: exact when they are the double's own shortest text (what a client
            # writing a float sends, e.g. 1.7777777777777777), so ``number`` returns it too.
            if len(text) <= _SHORT_DECIMAL_LENGTH or repr(value) == text:
                return int(value) if value.is_integer() else value
    return number(text)


def _fast_bytes(value: Any) -> bytes:
    if type(value) is str:
        return a2b_base64(value, strict_mode=True)  # what base64.b64decode(validate=True) does
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise _Unusual


def _fast(value: Any) -> JsonValue:
    if type(value) is not dict:
        raise _Unusual
    [(tag, inner)] = value.items()  # ValueError unless exactly one type key
    if tag == "S":
        if type(inner) is str:
            return inner
        raise _Unusual
    if tag == "N":
        # _fast_number, inlined for its most common case: one call less per number.
        if type(inner) is str and inner.isdigit() and len(inner) <= _SHORT_INTEGER_LENGTH and inner.isascii():
            return int(inner)
        return _fast_number(inner)
    if tag == "M":
        if type(inner) is dict:
            return {name: _fast(item) for name, item in inner.items()}
        raise _Unusual
    if tag == "L":
        if type(inner) is list:
            return [_fast(item) for item in inner]
        raise _Unusual
    if tag == "BOOL":
        if type(inner) is bool:
            return inner
        raise _Unusual
    if tag == "NULL":
        if inner is True:
            return None
        raise _Unusual
    if tag == "B":
        return b2a_base64(_fast_bytes(inner), newline=False).decode("ascii")
    if type(inner) is not list:
        raise _Unusual
    if tag == "SS":
        for text in inner:
            if type(text) is not str:
                raise _Unusual
        return sorted(inner)
    if tag == "NS":
        return sorted([_fast_number(text) for text in inner])
    if tag == "BS":
        raw = sorted([_fast_bytes(item) for item in inner])
        return [b2a_base64(item, newline=False).decode("ascii") for item in raw]
    raise _Unusual
