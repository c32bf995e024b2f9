"""The C walk (indexer/_walk.c) returns what the Python walk returns, raises what it raises.

``convert.item`` runs the C walk when it is built (``make install`` builds it); the C code
only has shortcuts for common values and hands every other value to ``convert._fast``. These
tests hold the two walks to the same values, Python types included, and the same exception
types, on generated values of every kind (valid, odd and malformed); show that the common
values never reach Python; and that the C code neither leaks nor frees what it does not own.
"""

from __future__ import annotations

import base64
import gc
import sys
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bench.common import image as realistic_image
from indexer import convert
from indexer.convert import ConversionError
from test_convert_equivalence import careful, damaged_images, images, number_texts, typed

native = convert._native


def test_the_c_walk_is_built_in_this_install():
    """Otherwise every other test here would test the Python walk against itself."""
    assert native is not None, "indexer/_walk.c was not built: run `make install` (needs a C compiler)"
    assert native.__file__.endswith(".abi3.so")  # one build for CPython 3.11 and later


def python_walk(value: Any) -> Any:
    return convert._fast(value)


def outcome(walk: Any, value: Any) -> tuple[str, Any]:
    """What a walk does with a value: its result with types, or the type of what it raised."""
    try:
        return "value", typed(walk(value))
    except (ValueError, TypeError, ConversionError, convert._Unusual, RecursionError) as error:
        return "raised", type(error)


def c_walk(value: Any) -> Any:
    return native.walk(value, convert._fast)


@contextmanager
def walk_in_python() -> Iterator[None]:
    saved, convert._native = convert._native, None
    try:
        yield
    finally:
        convert._native = saved


odd_numbers = st.one_of(
    number_texts(),
    st.from_regex(r"-?[0-9]{1,24}(\.[0-9]{0,24})?", fullmatch=True),
    st.floats(allow_nan=False).map(repr),
    st.text(alphabet="0123456789.-+eE٣２ ", max_size=24),
)
base64_like = st.one_of(
    st.binary(max_size=20).map(lambda raw: base64.b64encode(raw).decode()),
    st.text(alphabet="ABCQRSab09+/=-_ \n", max_size=12),  # padding in odd places, url-safe, spaces
    st.sampled_from(["QR==", "QUI=", "QUJ=", "====", "A===", "AB=C", "é", "", "\ud800AAA"]),
)
leaf_values = st.one_of(
    st.builds(lambda text: {"S": text}, st.one_of(st.text(max_size=10), st.integers(), st.none())),
    st.builds(lambda text: {"N": text}, st.one_of(odd_numbers, st.integers(), st.just("\ud800"))),
    st.builds(lambda text: {"B": text}, st.one_of(base64_like, st.binary(max_size=4), st.integers())),
    st.builds(lambda flag: {"BOOL": flag}, st.one_of(st.booleans(), st.integers(0, 1), st.none())),
    st.builds(lambda flag: {"NULL": flag}, st.one_of(st.booleans(), st.integers(0, 1))),
    st.builds(lambda texts: {"SS": texts}, st.one_of(st.lists(st.text(max_size=6), max_size=4), st.lists(st.integers(), min_size=1, max_size=2), st.text(max_size=2))),
    st.builds(lambda texts: {"NS": texts}, st.one_of(st.lists(odd_numbers, max_size=4), st.lists(st.integers(), min_size=1, max_size=2))),
    st.builds(lambda texts: {"BS": texts}, st.one_of(st.lists(base64_like, max_size=4), st.lists(st.binary(max_size=4), max_size=2))),
    st.sampled_from([{}, {"S": "a", "N": "1"}, {"X": "1"}, {"\ud800": "1"}, {"SSS": []}, {1: "a"}, "S", None, ["S", "a"]]),
)
any_values = st.recursive(
    leaf_values,
    lambda children: st.one_of(
        st.builds(lambda items: {"L": items}, st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=2), children, max_size=1))),
        st.builds(lambda items: {"M": items}, st.one_of(st.dictionaries(st.text(max_size=6), children, max_size=4), st.lists(children, max_size=1))),
    ),
    max_leaves=16,
)


@settings(max_examples=600, deadline=None)
@given(any_values)
@example({"B": "QR=="})  # trailing bits set: both walks write the canonical "QQ=="
@example({"N": "1.7777777777777777"})  # 17 digits, the double's own shortest text
@example({"N": "1234567890123456.0"})  # a whole double written at length: an int
@example({"N": "-0.0"})
@example({"N": "-000000000000000001"})
@example({"N": "123456789012345678"})  # 18 digits: the longest integer taken in C
@example({"N": "1234567890123456789"})  # 19: handed to Python
@example({"NS": ["2", "1.5", "-3"]})
@example({"BS": ["AQ==", "AA==", ""]})
@example({"B": base64.b64encode(bytes(range(256)) * 4).decode()})  # past the C walk's stack buffer
@example({"BS": [base64.b64encode(bytes(range(200))).decode(), base64.b64encode(bytes(191)).decode()]})
@example({"SS": ["b", "a", "é", "B"]})
def test_the_c_walk_does_what_the_python_walk_does(value):
    assert outcome(c_walk, value) == outcome(python_walk, value)


@settings(max_examples=200, deadline=None)
@given(st.one_of(images, damaged_images()))
def test_convert_item_is_the_same_with_either_walk(image):
    """The careful path behind both: same document or the same error, path included."""
    def result() -> Any:
        try:
            return typed(convert.item(image))
        except ConversionError as error:
            return error.path, error.message

    with walk_in_python():
        expected = result()
    assert result() == expected


@settings(max_examples=100, deadline=None)
@given(damaged_images())
def test_the_python_walk_alone_still_refuses_as_the_careful_path(image):
    with pytest.raises(ConversionError) as expected:
        careful(image)
    with walk_in_python(), pytest.raises(ConversionError) as caught:
        convert.item(image)
    assert (caught.value.path, caught.value.message) == (expected.value.path, expected.value.message)


def test_common_values_never_reach_the_python_walk():
    """Every type the benchmark's images hold (all ten) is converted in C."""
    handed: list[Any] = []

    def counting(value: Any) -> Any:
        handed.append(value)
        return convert._fast(value)

    for n in range(300):
        image = realistic_image(n)
        assert native.item(image, counting) == {name: convert._fast(value) for name, value in image.items()}
    assert handed == []
    assert native.walk({"N": "1e5"}, counting) == 100000
    assert handed == [{"N": "1e5"}]


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"S": "leaf"}
    for level in range(depth):
        value = {"M": {"a": value}} if level % 2 else {"L": [value]}
    return value


def test_deeper_than_a_dynamodb_item_is_refused_not_a_crash():
    assert convert.item({"a": nested(40)})["a"]  # DynamoDB's 32 levels and more convert
    with pytest.raises(ConversionError, match="nested deeper than a DynamoDB item can be"):
        convert.item({"a": nested(5_000)})


def test_the_c_walk_keeps_reference_counts_and_frees_what_it_builds():
    image = realistic_image(7)
    image["odd"] = {"L": [{"N": "1e5"}, {"B": "QR=="}, {"NS": ["1", "2.5"]}]}
    leaf = image["pk"]["S"]
    before = sys.getrefcount(leaf)
    for _ in range(100):
        document = convert.item(image)
        assert document["pk"] is leaf  # strings are shared, not copied
    del document
    assert sys.getrefcount(leaf) == before

    def convert_many(times: int) -> int:
        """Converts ``times`` good images and a tenth as many bad ones; traced memory after."""
        for _ in range(times):
            convert.item(image)
        for _ in range(times // 10):
            with pytest.raises(ConversionError):
                convert.item({"a": {"L": [{"S": "x"}, {"B": "!!"}]}})
        gc.collect()
        return tracemalloc.get_traced_memory()[0]

    gc.collect()
    tracemalloc.start()
    try:
        first = convert_many(2_000)  # caches and free lists settle
        last = convert_many(20_000)
    finally:
        tracemalloc.stop()
    # A leak of even one object per conversion would be 22,000 objects (over 1 MB) here.
    assert last - first < 100_000


# --- the names check: the C walk vouches only for documents the Python check passes ---------

names = st.one_of(st.text(alphabet="ab._d", max_size=6), st.sampled_from(["_ddb", "_ddb.seq", "_ddbx", "a.b", "\ud800."]))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=3)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(names, children, max_size=3)),
    max_leaves=12,
)


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(names, json_values, max_size=5))
@example({"a": [{"x.y": 1}]})  # a dotted name inside a list's map
@example({"_ddbx": 1})  # starts with the reserved name: left to the Python check (which passes it)
def test_ordinary_names_is_true_exactly_for_documents_without_dots_or_the_reserved_prefix(document):
    from indexer.records import RESERVED_FIELD, _has_dotted_name, name_problem

    expected = not any(name.startswith(RESERVED_FIELD) for name in document) and not _has_dotted_name(document)
    assert native.ordinary_names(document, RESERVED_FIELD) is expected
    with walk_in_python():
        python_says = name_problem(document)
    assert name_problem(document) == python_says


# --- a record's head: the C walk's answer is the Python checks' ---------------------------------

from test_records import _records  # noqa: E402


def head_or_error(record: Any, alias: str | None) -> Any:
    from indexer.records import RecordError, head_of

    try:
        return head_of(record, 3, alias)
    except RecordError as error:
        return error.kind, error.message


@settings(max_examples=2000, deadline=None)
@given(record=_records(), alias=st.sampled_from(["things", None]))
def test_a_record_has_the_same_head_or_error_with_the_c_walk(record, alias):
    with walk_in_python():
        expected = head_or_error(record, alias)
    assert head_or_error(record, alias) == expected


@st.composite
def well_formed_records(draw: st.DrawFn) -> dict[str, Any]:
    """Records the C walk takes (most of a real batch), with times of every kind."""
    event = draw(st.sampled_from(["INSERT", "MODIFY", "REMOVE"]))
    stream: dict[str, Any] = {"SequenceNumber": draw(st.from_regex(r"[0-9]{1,40}", fullmatch=True)),
                              "Keys": {draw(st.text(max_size=3)): {"S": draw(st.text(min_size=1, max_size=12))}}}
    if event != "REMOVE" or draw(st.booleans()):
        stream["NewImage"] = {"pk": {"S": "a"}}
    if draw(st.integers(0, 3)):
        stream["ApproximateCreationDateTime"] = draw(st.one_of(
            st.floats(0, 1e11), st.integers(0, 10**11), st.floats(), st.integers(), st.booleans()))
    record = {"eventName": event, "dynamodb": stream}
    if draw(st.booleans()):
        record["eventSource"] = "aws:dynamodb"
    return record


@settings(max_examples=1000, deadline=None)
@given(well_formed_records())
@example({"eventName": "MODIFY", "dynamodb": {"SequenceNumber": "1", "Keys": {"pk": {"S": "a"}}, "NewImage": {},
                                              "ApproximateCreationDateTime": 1700000000.123}})
@example({"eventName": "REMOVE", "dynamodb": {"SequenceNumber": "0" * 40, "Keys": {"pk": {"S": "a"}},
                                              "ApproximateCreationDateTime": 99_999_999_999}})
def test_a_well_formed_record_has_the_same_head_with_the_c_walk(record):
    with walk_in_python():
        expected = head_or_error(record, "things")
    assert head_or_error(record, "things") == expected


def test_the_c_walk_reads_the_common_record_and_leaves_the_rest():
    from stream_events import sample_event

    for record in sample_event("lambda_event_moto.json")["Records"]:
        keys = record["dynamodb"]["Keys"]
        plain = len(keys) == 1 and "S" in next(iter(keys.values()))
        assert (native.head(record) is not None) == plain
    record = {"eventName": "MODIFY", "dynamodb": {"SequenceNumber": "4421584500000000017450439091",
              "Keys": {"pk": {"S": "a"}}, "NewImage": {"pk": {"S": "a"}}, "ApproximateCreationDateTime": 1700000000.5}}
    assert native.head(record) == ("a", 4421584500000000017450439091, False, {"pk": {"S": "a"}}, 1700000000500, False)
    for odd in ({**record, "eventSource": "aws:kinesis"}, {**record, "eventName": "DELETE"},
                {**record, "dynamodb": {**record["dynamodb"], "Keys": {"pk": {"S": "a|b"}}}},
                {**record, "dynamodb": {**record["dynamodb"], "SequenceNumber": "1" * 41}}):
        assert native.head(odd) is None
