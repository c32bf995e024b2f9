"""Document ids: deterministic, readable, and unambiguous for any key."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from indexer.convert import ConversionError
from indexer.ids import MAX_ID_BYTES, document_id, escaped_id


def test_a_plain_string_key_is_its_own_id():
    assert document_id({"pk": {"S": "user-123"}}) == "user-123"


def test_composite_keys_join_in_attribute_name_order_whatever_the_json_order():
    first = document_id({"pk": {"S": "a"}, "sk": {"N": "2"}})
    second = document_id({"sk": {"N": "2"}, "pk": {"S": "a"}})
    assert first == second == "a|2"


def test_separators_in_values_cannot_make_two_keys_collide():
    ids = {
        document_id({"pk": {"S": "a|b"}, "sk": {"S": "c"}}),
        document_id({"pk": {"S": "a"}, "sk": {"S": "b|c"}}),
        document_id({"pk": {"S": "a\\"}, "sk": {"S": "|c"}}),
        document_id({"pk": {"S": "a\\|"}, "sk": {"S": "c"}}),
    }
    assert len(ids) == 4


def test_equal_numbers_written_differently_give_one_id():
    assert document_id({"pk": {"N": "1.50"}}) == document_id({"pk": {"N": "1.5"}}) == "1.5"
    assert document_id({"pk": {"N": "1E+3"}}) == document_id({"pk": {"N": "1000"}})
    assert document_id({"pk": {"N": "0007"}}) == "7"


def test_binary_and_unicode_keys():
    assert document_id({"pk": {"B": base64.b64encode(b"\x00\xff").decode()}}) == "AP8="
    assert document_id({"pk": {"S": "日本語 🚀"}, "sk": {"B": b"\x01"}}) == "日本語 🚀|AQ=="


def test_keys_longer_than_the_id_limit_are_hashed_deterministically():
    long_key = {"pk": {"S": "x" * 2048}, "sk": {"S": "y" * 1024}}
    doc_id = document_id(long_key)
    assert doc_id.startswith("#") and len(doc_id.encode()) <= MAX_ID_BYTES
    assert doc_id == document_id(dict(long_key))
    assert doc_id != document_id({"pk": {"S": "x" * 2048}, "sk": {"S": "y" * 1023}})


def test_a_key_that_looks_like_a_hashed_id_is_escaped():
    hashed = document_id({"pk": {"S": "z" * 600}})
    assert document_id({"pk": {"S": hashed}}) != hashed


@given(
    st.tuples(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30)),
    st.tuples(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30)),
)
def test_distinct_composite_keys_get_distinct_ids(a, b):
    def key(pair):
        return {"pk": {"S": pair[0]}, "sk": {"S": pair[1]}}

    if a != b and all("\ud800" > c or c > "\udfff" for c in "".join(a + b)):
        assert document_id(key(a)) != document_id(key(b))


@pytest.mark.parametrize(
    ("keys", "reason"),
    [
        ({}, "non-empty object"),
        (None, "non-empty object"),
        ({"pk": {"S": ""}}, "non-empty string"),
        ({"pk": {"BOOL": True}}, "must be S, N or B"),
        ({"pk": {"S": "a"}, "sk": {"S": "b"}, "x": {"S": "c"}}, "at most 2"),
        ({"pk": {"N": "one"}}, "not a number"),
        ({"pk": {"S": "\ud800"}}, "not valid Unicode"),
    ],
)
def test_bad_keys_are_refused(keys, reason):
    with pytest.raises(ConversionError, match=reason):
        document_id(keys)


def test_distinct_38_digit_keys_never_share_an_id():
    big = 10**37
    assert document_id({"pk": {"N": str(big)}}) != document_id({"pk": {"N": str(big + 1)}})
    assert document_id({"pk": {"N": "1234567890123456789012345678901234567.1"}}) != document_id(
        {"pk": {"N": "1234567890123456789012345678901234567.2"}})


def test_a_key_number_too_small_for_dynamodb_is_refused_instead_of_sharing_the_id_of_zero():
    with pytest.raises(ConversionError, match="outside DynamoDB's range"):
        document_id({"pk": {"N": "1e-99999999"}})
    assert document_id({"pk": {"N": "1E-130"}}) != document_id({"pk": {"N": "0"}})
@given(st.one_of(
    st.text(max_size=600),
    st.text(alphabet="ab|#\\", max_size=20),
    st.integers(500, 520).map(lambda n: "x" * n),
))
def test_the_shortcut_for_one_string_key_gives_the_general_rules_id(text):
    keys = {"pk": {"S": text}}
    try:
        expected = escaped_id(keys)
    except ConversionError:
        with pytest.raises(ConversionError):
            document_id(keys)
        return
    assert document_id(keys) == expected
