"""Malformed input never crashes a batch: each bad record is dead-lettered with a clear reason."""

from __future__ import annotations

import copy
from typing import Any, Callable

import pytest

from stream_events import put, record

pytestmark = pytest.mark.es


def edit(change: Callable[[dict[str, Any]], Any]) -> Callable[[], Any]:
    """A well-formed record for item "bad", damaged by ``change``."""

    def build() -> Any:
        damaged = put("bad", 2, v="x")
        result = change(damaged)
        return damaged if result is None else result

    return build


def set_path(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(target: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for name in parents:
            target = target[name]
        target[last] = value

    return change


def drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(target: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for name in parents:
            target = target[name]
        del target[last]

    return change


MALFORMED_RECORDS = {
    "record is text": (edit(lambda r: "INSERT a"), "a record must be an object"),
    "record is null": (edit(lambda r: [None]), "a record must be an object"),
    "no dynamodb": (edit(drop("dynamodb")), "no 'dynamodb' object"),
    "dynamodb is a list": (edit(set_path("dynamodb", [])), "no 'dynamodb' object"),
    "unknown eventName": (edit(set_path("eventName", "UPSERT")), "eventName must be INSERT, MODIFY or REMOVE"),
    "no eventName": (edit(drop("eventName")), "eventName must be INSERT, MODIFY or REMOVE"),
    "not from dynamodb": (edit(set_path("eventSource", "aws:kinesis")), "not 'aws:dynamodb'"),
    "no SequenceNumber": (edit(drop("dynamodb.SequenceNumber")), "SequenceNumber must be a string"),
    "SequenceNumber not digits": (edit(set_path("dynamodb.SequenceNumber", "12ab")), "1 to 40 digits"),
    "SequenceNumber a number": (edit(set_path("dynamodb.SequenceNumber", 123)), "SequenceNumber must be a string"),
    "SequenceNumber of 41 digits": (edit(set_path("dynamodb.SequenceNumber", "1" * 41)), "1 to 40 digits"),
    "no Keys": (edit(drop("dynamodb.Keys")), "Keys: must be a non-empty object"),
    "empty Keys": (edit(set_path("dynamodb.Keys", {})), "Keys: must be a non-empty object"),
    "three key attributes": (
        edit(set_path("dynamodb.Keys", {"a": {"S": "1"}, "b": {"S": "2"}, "c": {"S": "3"}})), "at most 2"),
    "key of type BOOL": (edit(set_path("dynamodb.Keys", {"pk": {"BOOL": True}})), "a key must be S, N or B"),
    "empty string key": (edit(set_path("dynamodb.Keys", {"pk": {"S": ""}})), "non-empty string"),
    "number key not a number": (edit(set_path("dynamodb.Keys", {"pk": {"N": "one"}})), "N is not a number"),
    "INSERT without NewImage": (edit(drop("dynamodb.NewImage")), "has no NewImage"),
    "NewImage is a list": (edit(set_path("dynamodb.NewImage", [1])), "NewImage: must be an object"),
    "two type keys": (edit(set_path("dynamodb.NewImage.v", {"S": "x", "N": "1"})), "exactly one type key"),
    "unknown type": (edit(set_path("dynamodb.NewImage.v", {"X": "1"})), "unknown DynamoDB type"),
    "NaN number": (edit(set_path("dynamodb.NewImage.v", {"N": "NaN"})), "N is not a number"),
    "invalid base64": (edit(set_path("dynamodb.NewImage.v", {"B": "###"})), "not valid base64"),
    "BOOL as text": (edit(set_path("dynamodb.NewImage.v", {"BOOL": "true"})), "BOOL must be true or false"),
    "NULL false": (edit(set_path("dynamodb.NewImage.v", {"NULL": False})), "NULL must be true"),
    "SS holding a number": (edit(set_path("dynamodb.NewImage.v", {"SS": ["a", 1]})), "attribute v[1]: S must be"),
    "L as an object": (edit(set_path("dynamodb.NewImage.v", {"L": {"a": 1}})), "L must be a list"),
    "M as a list": (edit(set_path("dynamodb.NewImage.v", {"M": []})), "M must be an object"),
    "reserved attribute": (edit(set_path("dynamodb.NewImage._ddb", {"S": "x"})), "reserves"),
    "lone surrogate": (edit(set_path("dynamodb.NewImage.v", {"S": "\ud800"})), "cannot be written as JSON"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_RECORDS))
def test_a_malformed_record_is_dead_lettered_and_the_rest_indexed(sync, case):
    build, reason = MALFORMED_RECORDS[case]
    bad = build()
    if isinstance(bad, list):  # a wrapper to smuggle None through edit()
        bad = bad[0]
    response = sync.deliver(put("a", 1, v="a"), copy.deepcopy(bad), put("c", 3, v="c"))
    assert response == {"batchItemFailures": []}
    assert sync.docs() == {"a": {"pk": "a", "v": "a"}, "c": {"pk": "c", "v": "c"}}
    (letter,) = sync.dead_letters()
    assert reason in letter["error"]["message"], letter["error"]
    assert letter["record"] == bad
    assert letter["attempts"] == 1 and letter["failed_at"]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({}, "no 'Records' list"),
        ({"records": []}, "no 'Records' list"),
        ({"Records": "x"}, "'Records' must be a list"),
        ({"Records": {"0": {}}}, "'Records' must be a list"),
        ([record("INSERT", {"pk": {"S": "a"}}, {"pk": {"S": "a"}})], "the event must be an object"),
    ],
)
def test_an_event_that_is_not_a_batch_is_kept_whole_in_the_dead_letter_queue(sync, payload, reason):
    assert sync.invoke(payload) == {"batchItemFailures": []}
    (letter,) = sync.dead_letters()
    assert reason in letter["error"]["message"] and letter["record"] == payload


def test_an_empty_batch_is_fine(sync):
    assert sync.invoke({"Records": []}) == {"batchItemFailures": []}
    assert sync.dead_letters() == []


def damaged_image(pk: str, sequence: int) -> dict[str, Any]:
    bad = put(pk, sequence, v="bad")
    bad["dynamodb"]["NewImage"]["v"] = {"N": "NaN"}
    return bad


def test_a_malformed_image_superseded_by_a_newer_record_of_its_item_is_not_dead_lettered(sync):
    """Only the newest record per item is converted: an older one's image never reaches the
    index, so a broken one is superseded like any other (README: malformed records)."""
    response = sync.deliver(damaged_image("a", 1), put("a", 2, v="two"))
    assert response == {"batchItemFailures": []}
    assert sync.docs() == {"a": {"pk": "a", "v": "two"}}
    assert sync.dead_letters() == []


def test_a_malformed_newest_image_is_dead_lettered_and_the_newest_valid_one_indexed(sync):
    bad = damaged_image("a", 3)
    response = sync.deliver(put("a", 1, v="one"), put("a", 2, v="two"), copy.deepcopy(bad))
    assert response == {"batchItemFailures": []}
    assert sync.docs() == {"a": {"pk": "a", "v": "two"}}
    (letter,) = sync.dead_letters()
    assert letter["record"] == bad and "N is not a number" in letter["error"]["message"]


def test_a_malformed_envelope_is_dead_lettered_even_when_a_newer_record_of_its_item_follows(sync):
    bad = put("a", 1, v="one")
    del bad["dynamodb"]["NewImage"]
    response = sync.deliver(copy.deepcopy(bad), put("a", 2, v="two"))
    assert response == {"batchItemFailures": []}
    assert sync.docs() == {"a": {"pk": "a", "v": "two"}}
    (letter,) = sync.dead_letters()
    assert letter["record"] == bad and "has no NewImage" in letter["error"]["message"]
