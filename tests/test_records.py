"""Stream records → changes, collapsing, and the reasons given for malformed records."""

from __future__ import annotations

import json

import pytest

from stream_events import SEQUENCE_BASE, put, record, remove, sample_event
from indexer.errors import RecordError
from indexer.records import collapse, change_of, head_of, newest_changes, padded_sequence, records_of, table_of


def source(change):
    return json.loads(change.source)


def test_insert_becomes_an_upsert_with_bookkeeping():
    change = change_of(put("a", 5, name="x"), 0)
    assert change.delete is False and change.doc_id == "a" and change.alias == "things"
    assert change.sequence == SEQUENCE_BASE + 5
    assert source(change) == {
        "pk": "a",
        "name": "x",
        "_ddb": {"seq": padded_sequence(SEQUENCE_BASE + 5), "at": 1795737074000},
    }


def test_remove_becomes_a_tombstone():
    change = change_of(remove("a", 6), 3)
    assert change.delete is True and change.position == 3
    assert source(change)["_ddb"]["deleted"] is True
    assert set(source(change)) == {"_ddb"}


def test_ttl_delete_from_the_aws_sample_is_a_delete():
    records = records_of(sample_event("lambda_event_aws_sample.json"))
    ttl = [r for r in records if "userIdentity" in r]
    assert ttl, "the sample carries a TTL delete"
    change = change_of(ttl[0], 0)
    assert change.delete is True
    assert change.alias == "exampletablewithstream"


def test_index_name_overrides_the_table_from_the_arn():
    assert change_of(put("a", 1), 0, "custom").alias == "custom"


def test_table_name_is_read_from_stream_and_table_arns():
    assert table_of("arn:aws:dynamodb:eu-west-1:1:table/My.Table-1/stream/2026") == "My.Table-1"
    assert table_of("arn:aws:dynamodb:eu-west-1:1:table/T") == "T"
    assert table_of("nonsense") is None


def test_sequence_numbers_compare_as_integers_of_any_size():
    low, high = record("INSERT", {"pk": {"S": "a"}}, {"pk": {"S": "a"}}), put("a", 1)
    low["dynamodb"]["SequenceNumber"] = "9" * 21
    high["dynamodb"]["SequenceNumber"] = "1" + "0" * 39
    assert change_of(low, 0).sequence < change_of(high, 1).sequence
    assert padded_sequence(10**39) > padded_sequence(10**21 - 1)


def test_collapse_keeps_the_newest_change_per_document_and_counts_the_rest():
    changes = [change_of(r, i) for i, r in enumerate([put("a", 1), put("b", 2), remove("a", 3), put("a", 2)])]
    latest, superseded = collapse(changes)
    by_id = {c.doc_id: c for c in latest}
    assert superseded == 2
    assert by_id["a"].delete is True and by_id["a"].covers == [0, 2, 3]
    assert by_id["b"].covers == [1]


def test_an_item_using_the_reserved_field_is_refused():
    bad = put("a", 1)
    bad["dynamodb"]["NewImage"]["_ddb"] = {"S": "mine"}
    with pytest.raises(RecordError, match="reserves") as caught:
        change_of(bad, 0)
    assert caught.value.kind == "reserved_attribute"


def test_an_upsert_without_new_image_names_the_stream_view_type():
    bad = put("a", 1)
    del bad["dynamodb"]["NewImage"]
    with pytest.raises(RecordError, match="NEW_AND_OLD_IMAGES"):
        change_of(bad, 0)


@pytest.mark.parametrize("name", ["_ddb.deleted", "_ddb.seq", "_ddb.x.y"])
def test_an_attribute_name_that_expands_into_the_reserved_field_is_refused(name):
    bad = put("a", 1)
    bad["dynamodb"]["NewImage"][name] = {"BOOL": True}
    with pytest.raises(RecordError, match="reserves") as caught:
        change_of(bad, 0)
    assert caught.value.kind == "reserved_attribute"


@pytest.mark.parametrize("image", [
    {"a.b": {"N": "1"}, "a": {"M": {"b": {"N": "2"}}}},
    {"a": {"M": {"b": {"N": "2"}}}, "a.b": {"N": "1"}},
    {"a.b": {"N": "1"}, "a": {"N": "5"}},
    {"m": {"M": {"x.y": {"S": "1"}, "x": {"M": {"y": {"S": "2"}}}}}},
])
def test_dotted_names_that_collide_once_expanded_are_refused(image):
    bad = put("a", 1)
    bad["dynamodb"]["NewImage"].update(image)
    with pytest.raises(RecordError, match="also names|an object and a value") as caught:
        change_of(bad, 0)
    assert caught.value.kind == "colliding_attribute_names"


def test_dotted_names_that_do_not_collide_are_indexed_as_they_are():
    fine = put("a", 1)
    fine["dynamodb"]["NewImage"].update({"a.b": {"N": "1"}, "a": {"M": {"c": {"N": "2"}}}, "x.y": {"S": "z"}})
    assert b'"a.b":1' in change_of(fine, 0).source
def heads_of(*records):
    return [head_of(r, i) for i, r in enumerate(records)]


def bad_image(pk, sequence):
    damaged = put(pk, sequence)
    damaged["dynamodb"]["NewImage"]["v"] = {"N": "not a number"}
    return damaged


def test_newest_changes_keeps_the_newest_record_per_document():
    changes, errors, superseded = newest_changes(heads_of(put("a", 1), put("b", 2), remove("a", 3), put("a", 2)))
    by_id = {c.doc_id: c for c in changes}
    assert errors == {} and superseded == 2
    assert by_id["a"].delete is True and by_id["a"].covers == [0, 2, 3]
    assert by_id["b"].covers == [1]


def test_a_superseded_record_is_not_converted_even_when_its_image_is_malformed():
    changes, errors, superseded = newest_changes(heads_of(bad_image("a", 1), put("a", 2, v="ok")))
    assert errors == {} and superseded == 1
    (change,) = changes
    assert source(change)["v"] == "ok" and change.covers == [0, 1]


def test_a_newest_record_that_does_not_convert_gives_way_to_the_next_newest():
    changes, errors, superseded = newest_changes(heads_of(put("a", 1, v="old"), put("a", 2, v="mid"), bad_image("a", 3)))
    assert list(errors) == [2] and "not a number" in errors[2].message
    (change,) = changes
    assert source(change)["v"] == "mid" and change.covers == [0, 1] and superseded == 1


def test_a_record_delivered_twice_keeps_the_first_position():
    changes, _, superseded = newest_changes(heads_of(put("a", 1, v="x"), put("a", 1, v="x")))
    assert [c.position for c in changes] == [0] and changes[0].covers == [0, 1] and superseded == 1


def test_newest_changes_gives_the_same_changes_as_converting_everything_then_collapsing():
    records = [put("a", 3, v=1), remove("b", 1), put("b", 4, v=2), put("a", 2, v=3), put("c", 5), remove("a", 6)]
    expected, expected_superseded = collapse([change_of(r, i) for i, r in enumerate(records)])
    changes, errors, superseded = newest_changes(heads_of(*records))
    assert errors == {} and superseded == expected_superseded
    assert [(c.doc_id, c.source, c.covers) for c in changes] == [(c.doc_id, c.source, c.covers) for c in expected]


def test_a_sequence_number_of_other_scripts_digits_is_malformed():
    bad = put("a", 1)
    bad["dynamodb"]["SequenceNumber"] = "١٢٣"  # str.isdigit() alone accepts these
    with pytest.raises(RecordError, match="1 to 40 digits"):
        head_of(bad, 0)


# --- any record: a head or a RecordError, never a crash ---------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_key_texts = st.one_of(st.text(max_size=8), st.sampled_from(["a|b", "a#", "a\\b", "é", "", "x" * 513, "x" * 512]))
_keys = st.one_of(
    st.builds(lambda text: {"pk": {"S": text}}, _key_texts),
    st.builds(lambda text: {"pk": {"N": text}}, st.sampled_from(["1", "1.50", "x"])),
    st.builds(lambda a, b: {"pk": {"S": a}, "sk": {"S": b}}, _key_texts, _key_texts),
    st.sampled_from([{}, {"pk": "a"}, {"pk": {"S": "a", "N": "1"}}, None, ["a"]]),
)
_sequences = st.one_of(st.from_regex(r"[0-9]{1,41}", fullmatch=True),
                       st.sampled_from(["", "12a", "١٢", "+1", None, 12, "0"]))
_times = st.one_of(st.none(), st.integers(-10, 2**40), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from(["1", True]))
_images = st.one_of(st.none(), st.just({"pk": {"S": "a"}}), st.just("not an image"))


def _mostly(draw, valid, invalid):
    """A draw from ``valid`` four times in five, else from ``invalid``: most records are
    well formed but for one part (about one in five is well formed in every part)."""
    return draw(valid) if draw(st.integers(0, 4)) else draw(invalid)


@st.composite
def _records(draw):
    stream = {"SequenceNumber": _mostly(draw, st.from_regex(r"[0-9]{1,40}", fullmatch=True), _sequences),
              "Keys": _mostly(draw, st.builds(lambda text: {"pk": {"S": text}}, st.text(min_size=1, max_size=8)), _keys)}
    if draw(st.integers(0, 4)):
        stream["NewImage"] = _mostly(draw, st.just({"pk": {"S": "a"}}), _images)
    if draw(st.booleans()):
        stream["ApproximateCreationDateTime"] = draw(_times)
    record = {"eventName": _mostly(draw, st.sampled_from(["INSERT", "MODIFY", "REMOVE"]),
                                   st.sampled_from(["DELETE", None, ["INSERT"], 1])),
              "dynamodb": _mostly(draw, st.just(stream), st.sampled_from([None, "x", []]))}
    source = _mostly(draw, st.sampled_from([None, "aws:dynamodb"]), st.sampled_from(["aws:kinesis", ["aws:dynamodb"]]))
    if source is not None:
        record["eventSource"] = source
    if draw(st.booleans()):
        record["eventSourceARN"] = "arn:aws:dynamodb:us-east-1:1:table/Things/stream/x"
    return _mostly(draw, st.just(record), st.sampled_from([None, [], "record"]))


@settings(max_examples=3000, deadline=None)
@given(record=_records(), alias=st.sampled_from(["things", None]))
def test_any_record_gives_a_head_or_a_record_error_never_another_exception(record, alias):
    """Another exception would fail the whole batch (Lambda retries it until it expires)
    instead of dead-lettering the one record: stream records are AWS's, but redrive messages
    and local sync feed head_of too."""
    try:
        head = head_of(record, 7, alias)
    except RecordError:
        return
    assert head.at is None or 0 <= head.at < 10**14
    assert head.sequence >= 0 and head.doc_id


def test_a_forged_creation_time_or_event_name_is_ignored_or_refused_not_a_crash():
    forged = put("a", 5, v="x")
    for seconds in (float("inf"), float("nan"), 1.8e305, -5, 10**30):  # JSON's 1e999 parses as infinity
        forged["dynamodb"]["ApproximateCreationDateTime"] = seconds
        assert head_of(forged, 0, "things").at is None
    forged["eventName"] = ["INSERT"]
    with pytest.raises(RecordError, match="eventName must be INSERT, MODIFY or REMOVE"):
        head_of(forged, 0, "things")
