"""Our documents equal boto3's ``TypeDeserializer``'s, and the fast path equals the careful one.

The conversion benchmark (bench/convert_bench.py) compares speed with ``TypeDeserializer``;
these tests make sure both sides produce the same documents, as the contract normalises them:
sets as sorted arrays (strings by code point, numbers by value, binaries by bytes), binary as
base64, numbers compared by exact value. ``TypeDeserializer`` is given what it can take:
bytes for binary values (Lambda delivers base64 text, which it refuses) and numbers of at
most 38 digits (DynamoDB's precision; it raises ``decimal.Inexact`` past that).

``convert.item`` converts through a fast path and falls back to the careful path
(``convert.attribute``) for anything unusual; the property tests hold the two to the same
values, types included, and to the same errors.
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bench.common import image as realistic_image  # the benchmark's images
from bench.common import to_boto3_shape
from stream_events import sample_event
from indexer import convert
from indexer.convert import ConversionError
from indexer.encode import dumps

DESERIALIZER = TypeDeserializer()


def ours(image: dict[str, Any]) -> Any:
    """Our document as Elasticsearch receives it: serialized, then read back exactly."""
    return canonical(json.loads(dumps(convert.item(image)), parse_float=Decimal, parse_int=Decimal))


def boto3s(image: dict[str, Any]) -> Any:
    """``TypeDeserializer``'s document, normalised as the contract says."""
    document = {name: DESERIALIZER.deserialize(value) for name, value in to_boto3_shape(image).items()}
    return canonical(normalised(document))


def normalised(value: Any) -> Any:
    """boto3's Python values in the contract's JSON shapes."""
    if isinstance(value, Binary):
        return base64.b64encode(value.value).decode("ascii")
    if isinstance(value, (set, frozenset)):
        members = list(value)
        if members and isinstance(members[0], Binary):
            return [base64.b64encode(raw).decode("ascii") for raw in sorted(member.value for member in members)]
        return sorted(members)  # strings by code point, Decimals by value
    if isinstance(value, dict):
        return {name: normalised(item) for name, item in value.items()}
    if isinstance(value, list):
        return [normalised(item) for item in value]
    return value


def canonical(value: Any) -> Any:
    """A form where equal means the same JSON value: numbers by exact value, and no number
    equal to a boolean (in Python ``True == 1``)."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, (int, float, Decimal)):
        return ("number", Decimal(value) if not isinstance(value, float) else Decimal(repr(value)))
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("list", [canonical(item) for item in value])
    if isinstance(value, dict):
        return ("map", {name: canonical(item) for name, item in value.items()})
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def typed(value: Any) -> Any:
    """Value and Python type at every level: the fast and careful paths must agree on both."""
    if isinstance(value, list):
        return ("list", [typed(item) for item in value])
    if isinstance(value, dict):
        return ("dict", {name: typed(item) for name, item in value.items()})
    return (type(value).__name__, value)


def careful(image: dict[str, Any]) -> dict[str, Any]:
    return {name: convert.attribute(value, name) for name, value in image.items()}


def moto_images() -> list[dict[str, Any]]:
    images = []
    for record in sample_event("lambda_event_moto.json")["Records"]:
        stream = record["dynamodb"]
        images.extend(stream[part] for part in ("Keys", "NewImage", "OldImage") if part in stream)
    return images


# --- the benchmark's images and the moto sample ----------------------------------------


def test_the_realistic_images_hold_every_dynamodb_type():
    tags = set()

    def collect(value: dict[str, Any]) -> None:
        ((tag, inner),) = value.items()
        tags.add(tag)
        for item in inner.values() if tag == "M" else inner if tag == "L" else ():
            collect(item)

    for n in range(8):
        for value in realistic_image(n).values():
            collect(value)
    assert tags == {"S", "N", "B", "SS", "NS", "BS", "BOOL", "NULL", "M", "L"}


@pytest.mark.parametrize("n", range(0, 240, 7))
def test_realistic_images_convert_as_type_deserializer_does(n):
    image = realistic_image(n)
    assert ours(image) == boto3s(image)


def test_the_moto_sample_holds_every_dynamodb_type():
    kinds = {tag for image in moto_images() for value in image.values() for tag in value}
    assert kinds == {"S", "N", "B", "SS", "NS", "BS", "BOOL", "NULL", "M", "L"}


@pytest.mark.parametrize("image", moto_images(), ids=lambda image: ",".join(sorted(image))[:40])
def test_the_moto_sample_converts_as_type_deserializer_does(image):
    assert ours(image) == boto3s(image)


def test_the_comparison_tells_a_number_from_a_boolean_and_a_string():
    assert canonical(1) != canonical(True)
    assert canonical(Decimal("1.50")) == canonical(1.5)
    assert canonical("1") != canonical(1)


def test_type_deserializer_needs_bytes_for_binary_and_at_most_38_digits():
    """Why the comparison feeds boto3 a reshaped image (and why we don't use it)."""
    from decimal import Inexact

    with pytest.raises(TypeError):
        DESERIALIZER.deserialize({"B": "AAE="})
    with pytest.raises(Inexact):
        DESERIALIZER.deserialize({"N": "1" * 39})
    assert convert.item({"b": {"B": "AAE="}, "n": {"N": "1" * 38}}) == {"b": "AAE=", "n": Decimal("1" * 38)}


# --- any valid value: ours = boto3's, fast path = careful path ----------------------------

DIGITS = st.text("0123456789", min_size=1, max_size=38)


@st.composite
def number_texts(draw: st.DrawFn) -> str:
    """Numbers as DynamoDB may deliver them (at most 38 significant digits), written the ways
    moto and clients write them: ``7``, ``0007``, ``-0``, ``1.50``, ``.5``, ``1E+3``, ..."""
    digits = draw(DIGITS)
    sign = draw(st.sampled_from(["", "-"]))
    body = digits
    if draw(st.booleans()):
        point = draw(st.integers(0, len(digits)))
        body = f"{digits[:point]}.{digits[point:]}"
    if draw(st.booleans()):
        body += draw(st.sampled_from(["E", "e"])) + draw(st.sampled_from(["", "+", "-"])) + str(draw(st.integers(0, 60)))
    return sign + body


def _distinct_numbers(texts: list[str]) -> list[str]:
    seen, kept = set(), []
    for text in texts:
        if Decimal(text) not in seen:
            seen.add(Decimal(text))
            kept.append(text)
    return kept


scalars = st.one_of(
    st.builds(lambda text: {"S": text}, st.text(max_size=20)),
    st.builds(lambda text: {"N": text}, number_texts()),
    st.builds(lambda raw: {"B": base64.b64encode(raw).decode()}, st.binary(max_size=12)),
    st.builds(lambda flag: {"BOOL": flag}, st.booleans()),
    st.just({"NULL": True}),
    st.builds(lambda texts: {"SS": sorted(texts, reverse=True)}, st.sets(st.text(max_size=8), min_size=1, max_size=5)),
    st.builds(lambda texts: {"NS": _distinct_numbers(texts)}, st.lists(number_texts(), min_size=1, max_size=5)),
    st.builds(
        lambda raws: {"BS": [base64.b64encode(raw).decode() for raw in raws]},
        st.sets(st.binary(max_size=6), min_size=1, max_size=5),
    ),
)
attribute_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.builds(lambda items: {"L": items}, st.lists(children, max_size=4)),
        st.builds(lambda items: {"M": items}, st.dictionaries(st.text(max_size=6), children, max_size=4)),
    ),
    max_leaves=20,
)
images = st.dictionaries(st.text(min_size=1, max_size=8), attribute_values, min_size=1, max_size=6)


def within_dynamodb_range(image: dict[str, Any]) -> bool:
    """DynamoDB stores magnitudes from 1E-130 to below 1E+126 (boto3 refuses the rest)."""
    for text in (text for value in image.values() for text in _numbers(value)):
        exact = Decimal(text)
        if exact != 0 and not Decimal("1E-130") <= abs(exact) < Decimal("1E+126"):
            return False
    return True


def _numbers(value: dict[str, Any]) -> list[str]:
    """The number texts inside one AttributeValue."""
    ((tag, inner),) = value.items()
    if tag == "N":
        return [inner]
    if tag == "NS":
        return list(inner)
    if tag in ("M", "L"):
        return [text for item in (inner.values() if tag == "M" else inner) for text in _numbers(item)]
    return []


@settings(max_examples=200, deadline=None)
@given(images)
def test_any_valid_image_converts_as_type_deserializer_does(image):
    if within_dynamodb_range(image):
        assert ours(image) == boto3s(image)


@settings(max_examples=200, deadline=None)
@given(images)
def test_the_fast_path_gives_what_the_careful_path_gives_types_included(image):
    assert typed(convert.item(image)) == typed(careful(image))
    assert dumps(convert.item(image)) == dumps(careful(image))


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=45),
        number_texts(),
        st.from_regex(r"-?[0-9]{1,20}(\.[0-9]{0,20})?", fullmatch=True),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),  # what clients writing floats send
    )
)
@example("99962283038836.85")  # 16 digits: the nearest double reads 99962283038836.84
@example("1.7777777777777777")  # 17 digits, and the double's own shortest text
@example("1.77777777777777770")  # the same value, not the double's text
@example("0.1000000000000000000000001")
@example("-9996228303883.685")
@example("123456789012345678")  # 18 digits: still a plain int
@example("9223372036854775808")  # 2**63: past the long range
@example("２")  # a digit, but not an ASCII one
def test_the_fast_path_reads_any_number_text_as_the_careful_path_does(text):
    try:
        expected = typed(convert.attribute({"N": text}, "n"))
    except ConversionError as error:
        with pytest.raises(ConversionError) as caught:
            convert.item({"n": {"N": text}})
        assert caught.value.message == error.message
        return
    assert typed(convert.item({"n": {"N": text}})["n"]) == expected


# --- anything invalid: the same error, with the same path ---------------------------------

bad_leaves = st.one_of(
    st.builds(lambda value: {"S": value}, st.one_of(st.integers(), st.none(), st.lists(st.text(), max_size=1))),
    st.builds(lambda value: {"N": value}, st.one_of(st.integers(), st.sampled_from(["", "abc", "NaN", "1_0", " 1", "١"]))),
    st.builds(lambda value: {"B": value}, st.sampled_from(["not base64!", "AAE", "é", 5])),
    st.builds(lambda value: {"BOOL": value}, st.sampled_from(["true", 1, None])),
    st.builds(lambda value: {"NULL": value}, st.sampled_from([False, "true", 1])),
    st.builds(lambda value: {"SS": value}, st.sampled_from(["a", ["a", 1], None])),
    st.builds(lambda value: {"NS": value}, st.sampled_from([["1", "x"], "1", [1]])),
    st.builds(lambda value: {"BS": value}, st.sampled_from([["AAE=", "!"], "AAE=", [1]])),
    st.sampled_from([{"M": []}, {"L": {}}, {"X": "1"}, {"S": "a", "N": "1"}, {}, "plain", None, ["S", "a"]]),
)


@st.composite
def damaged_images(draw: st.DrawFn) -> dict[str, Any]:
    """A valid image with one value somewhere inside it replaced by a bad one."""
    image = draw(images)
    bad = draw(bad_leaves)
    name = draw(st.sampled_from(sorted(image)))
    depth = draw(st.integers(0, 2))
    for _ in range(depth):
        bad = draw(st.sampled_from([{"M": {"inner": bad}}, {"L": [{"S": "ok"}, bad]}]))
    return {**image, name: bad}


@settings(max_examples=200, deadline=None)
@given(damaged_images())
def test_a_bad_value_anywhere_is_refused_with_the_careful_paths_message(image):
    with pytest.raises(ConversionError) as expected:
        careful(image)
    with pytest.raises(ConversionError) as caught:
        convert.item(image)
    assert caught.value.message == expected.value.message
    assert caught.value.path == expected.value.path
