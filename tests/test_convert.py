"""Conversion of every DynamoDB type, exactly, and the reasons for refusing bad values."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_events import sample_event
from indexer import convert
from indexer.convert import ConversionError
from indexer.encode import dumps


def all_types_image() -> dict:
    return sample_event("lambda_event_moto.json")["Records"][0]["dynamodb"]["NewImage"]


def test_every_dynamodb_type_converts_as_the_contract_says():
    document = convert.item(all_types_image())
    assert document == {
        "pk": "all-types",
        "sk": 1,
        "s": "hello",
        "n_int": 42,
        "n_dec": 0.1,
        "n_big": Decimal("12345678901234567890123456789012345678"),
        "n_neg": -17.5,
        "n_exp": 1000,
        "b": "AAH/YmluYXJ5",
        "ss": ["a", "b", "c"],
        "ns": [-2, 1.5, 3],
        "bs": ["AQI=", "/w=="],  # sorted by their bytes: 01 02 < ff
        "t": True,
        "f": False,
        "nul": None,
        "m": {"inner": "x", "deep": {"n": 7, "l": [1, "two"]}},
        "l": ["a", 2, False, None, {"k": "v"}, []],
        "empty_m": {},
        "empty_l": [],
        "uni": "héllo wörld — 日本語 🚀",
        "empty_s": "",
    }


def test_json_keeps_every_digit_of_big_and_long_decimal_numbers():
    image = {
        "big": {"N": "12345678901234567890123456789012345678"},
        "long_decimal": {"N": "0.1000000000000000000000001"},
        "tiny": {"N": "1E-130"},
        "huge": {"N": "9.9999999999999999999999999999999999999E+125"},
    }
    text = dumps(convert.item(image)).decode()
    assert '"big":12345678901234567890123456789012345678' in text
    assert '"long_decimal":0.1000000000000000000000001' in text
    parsed = json.loads(text, parse_float=Decimal)
    assert parsed["tiny"] == Decimal("1E-130")
    assert parsed["huge"] == Decimal("9.9999999999999999999999999999999999999E+125")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("42", 42), ("0007", 7), ("-0", 0), ("1E+3", 1000), ("1.50", 1.5), ("-17.5", -17.5),
     ("9223372036854775807", 2**63 - 1), ("9223372036854775808", Decimal(2**63))],
)
def test_numbers_become_integers_when_whole_and_floats_when_exact(text, expected):
    value = convert.number(text)
    assert value == expected and type(value) is type(expected)


@given(
    st.decimals(
        min_value=Decimal("-1E+125"), max_value=Decimal("1E+125"), allow_nan=False, allow_infinity=False, places=None
    ).filter(lambda d: d == 0 or (abs(d) >= Decimal("1E-130")
                                  and len("".join(map(str, d.as_tuple().digits)).strip("0")) <= 38))
)
def test_any_dynamodb_number_survives_json_exactly(value):
    text = format(value, "f") if abs(value.adjusted()) < 30 else str(value)
    out = dumps({"n": convert.number(text)})
    assert json.loads(out, parse_float=Decimal, parse_int=Decimal)["n"] == Decimal(text)


def test_binary_accepts_bytes_from_boto3_as_well_as_base64_text():
    assert convert.attribute({"B": b"\x00\x01"}, "b") == "AAE="
    assert convert.attribute({"BS": [b"\xff", "AQI="]}, "bs") == ["AQI=", "/w=="]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"S": 5}, "S must be a string"),
        ({"N": "abc"}, "N is not a number"),
        ({"N": 5}, "N must be a string"),
        ({"N": "NaN"}, "N is not a number"),
        ({"B": "not base64!"}, "not valid base64"),
        ({"BOOL": "true"}, "BOOL must be true or false"),
        ({"NULL": False}, "NULL must be true"),
        ({"SS": "a"}, "SS must be a list"),
        ({"SS": ["a", 1]}, "S must be a string"),
        ({"NS": ["1", "x"]}, "N is not a number"),
        ({"M": []}, "M must be an object"),
        ({"L": {}}, "L must be a list"),
        ({"X": "1"}, "unknown DynamoDB type"),
        ({"S": "a", "N": "1"}, "exactly one type key"),
        ("plain", "exactly one type key"),
        ({"M": {"inner": {"L": [{"N": "1"}, {"Q": 1}]}}}, "unknown DynamoDB type"),
    ],
)
def test_bad_attribute_values_are_refused_with_their_path(value, reason):
    with pytest.raises(ConversionError) as caught:
        convert.attribute(value, "attr")
    assert reason in caught.value.message
    assert caught.value.message.startswith("attribute attr")


def test_the_path_of_a_nested_bad_value_is_named():
    with pytest.raises(ConversionError, match=r"attribute attr\.inner\[1\]"):
        convert.attribute({"M": {"inner": {"L": [{"N": "1"}, {"Q": 1}]}}}, "attr")


# -- values that did not come from DynamoDB (dead letters, files) -------------------------------


@pytest.mark.parametrize("text, reason", [
    ("1e999999", "outside DynamoDB's range"),  # its exact integer took ~27 s
    ("1e999999999", "outside DynamoDB's range"),  # its exact integer never finished
    ("-1e-131", "outside DynamoDB's range"),
    ("1" * 39, "39 significant digits"),
    ("1" * 20000 + "x", "20001 characters long"),  # the old pattern backtracked quadratically
])
def test_a_number_dynamodb_could_not_hold_is_refused_before_any_arithmetic(text, reason):
    with pytest.raises(convert.ConversionError, match=reason):
        convert.number(text)


def test_dynamodb_s_extreme_numbers_are_still_taken():
    assert convert.number("9.9999999999999999999999999999999999999E+125") == Decimal("9.9999999999999999999999999999999999999E+125")
    assert convert.number("-1E-130") == -1e-130  # the double whose shortest text is exactly that
    assert convert.number("0" * 300) == 0


def test_an_image_nested_deeper_than_python_s_stack_is_one_conversion_error():
    value: dict = {"N": "1"}
    for _ in range(5000):
        value = {"M": {"a": value}}
    with pytest.raises(convert.ConversionError, match="nested deeper"):
        convert.item({"deep": value})
