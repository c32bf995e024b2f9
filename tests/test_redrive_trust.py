"""Redrive against a hostile dead-letter queue: tampered copies of real dead letters.

Anyone who may send to the queue writes its messages. Each case here sends one tampered copy
of a real message beside a good one, against the real Elasticsearch and moto AWS, and checks:
nothing is written outside the run's alias, the tampered message is refused (parked as is, and
reported), the good one is applied, the run ends, and a later real change still reaches the
index (docs/security.md).
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from test_redrive import (  # noqa: F401 - fixtures
    PARSING_ERRORS, TABLE, _no_long_poll, bodies, counts, create_table, letter, on_failure, put, redrive, send,
    stream_records, summary_line, things,
)

pytestmark = pytest.mark.es


@pytest.fixture
def parking(sync) -> str:
    return boto3.client("sqs").create_queue(QueueName=f"dlq-{sync.alias}-parking")["QueueUrl"]


def indices(sync) -> dict[str, str]:
    """Every index of the cluster but the run's own (hidden and dot-names too), with its
    document count."""
    rows = sync.es.call("GET", "/_cat/indices", {"expand_wildcards": "all", "format": "json", "h": "index,docs.count"})
    return {row["index"]: row["docs.count"] for row in rows
            if not row["index"].startswith((f"{sync.alias}-", ".ds-"))}


def refused_run(sync, parking: str, tampered: str, capsys) -> str:
    """Redrive ``tampered`` beside a good dead letter; the printed report. Checks what every
    case shares: exit 1, the good record applied, the tampered message parked byte for byte,
    no index created or touched outside the run's alias."""
    good = put("good", 1, v=1)
    send(sync.queue_url, letter(good), tampered)
    before = indices(sync)

    assert redrive() == 1

    assert indices(sync) == before
    assert sync.docs() == {"good": {"pk": "good", "v": 1}}
    assert bodies(parking) == [tampered]
    assert counts(sync.queue_url) == (0, 0)
    out = capsys.readouterr().out
    assert summary_line(out, "refused") == 1 and summary_line(out, "redriven") == 1
    return out


def tampered(record: dict[str, Any], **body: Any) -> str:
    return json.dumps({**json.loads(letter(record)), **body})


def test_a_dead_letter_of_another_table_is_refused_and_its_item_never_read(sync, things, parking, capsys):
    create_table("Users")
    boto3.client("dynamodb").put_item(TableName="Users", Item={"pk": {"S": "alice"}, "password_hash": {"S": "x"}})
    _, (users_record,) = stream_records(
        boto3.client("dynamodb").describe_table(TableName="Users")["Table"]["LatestStreamArn"])

    out = refused_run(sync, parking, letter(users_record), capsys)

    assert sync.raw("alice") is None
    assert "is not a stream of table 'Things'" in out


def test_a_dead_letter_naming_another_region_is_refused(sync, things, parking, capsys):
    record = put("a", 1, v=1)
    record["eventSourceARN"] = record["eventSourceARN"].replace(":us-east-1:", ":us-west-2:")
    record["awsRegion"] = "us-west-2"

    refused_run(sync, parking, letter(record), capsys)

    assert sync.raw("a") is None


def test_a_dead_letter_naming_another_account_is_refused(sync, things, parking, capsys):
    record = put("a", 1, v=1)
    record["eventSourceARN"] = record["eventSourceARN"].replace(":123456789012:", ":210987654321:")

    refused_run(sync, parking, letter(record), capsys)

    assert sync.raw("a") is None


@pytest.mark.parametrize("other", ["other-app", ".kibana_1-initial"])
def test_a_dead_letter_naming_another_index_is_refused(sync, things, parking, capsys, other):
    out = refused_run(sync, parking, tampered(put("a", 1, v=1), index=f"{other}-{sync.alias}"), capsys)

    assert sync.raw("a") is None
    assert "is not this run's alias" in out


def test_a_forged_sequence_number_is_refused_and_later_changes_still_reach_the_index(sync, things, parking, capsys):
    forged = put("a", 2, v=2)
    forged["dynamodb"]["SequenceNumber"] = "9" * 40

    out = refused_run(sync, parking, letter(forged), capsys)

    assert "is not in the table's stream" in out
    sync.deliver(put("a", 3, v=3))
    assert sync.docs()["a"] == {"pk": "a", "v": 3}


def test_a_real_sequence_number_on_another_item_is_refused(sync, things, parking, capsys):
    record = put("a", 1, v=1)
    record["dynamodb"]["Keys"] = {"pk": {"S": "victim"}}

    out = refused_run(sync, parking, letter(record), capsys)

    assert "another event or item" in out and sync.raw("victim") is None


def test_an_on_failure_message_for_another_table_s_stream_is_refused(sync, things, parking, capsys):
    users = create_table("Users")
    boto3.client("dynamodb").put_item(TableName="Users", Item={"pk": {"S": "alice"}, "password_hash": {"S": "x"}})
    shard_id, records = stream_records(users)

    refused_run(sync, parking, on_failure(users, shard_id, records), capsys)

    assert sync.raw("alice") is None


@pytest.mark.parametrize("hostile", [
    "{\"type\": \"dynamodb-es-indexer/dead-letter\", \"record\": {\"dynamodb\": {\"ApproximateCreationDateTime\": Infinity}}}",
    "{\"type\": \"dynamodb-es-indexer/dead-letter\", \"record\": {\"dynamodb\": {\"ApproximateCreationDateTime\": NaN}}}",
    "[" * 50_000,
], ids=["infinity", "nan", "deep"])
def test_a_hostile_body_is_set_aside_and_the_run_goes_on(sync, things, parking, capsys, hostile):
    good = put("good", 1, v=1)
    send(sync.queue_url, hostile, letter(good))

    assert redrive() == 1

    assert sync.docs() == {"good": {"pk": "good", "v": 1}}
    assert bodies(parking) == [hostile]
    assert summary_line(capsys.readouterr().out, "unreadable") == 1


def test_hostile_values_inside_a_real_dead_letter_are_refused_one_by_one(sync, things, parking, capsys):
    stream_arn = things
    huge_key = put("a", 1, v=1)
    huge_key["dynamodb"]["Keys"] = {"pk": {"N": "1e999999999"}}  # its exact integer never finished
    infinite = put("b", 2, v=2)
    infinite["dynamodb"]["ApproximateCreationDateTime"] = float("inf")
    bad_region = json.loads(on_failure(stream_arn, "shardId-00000001541626099285-f35f62ef", [put("c", 3)]))
    bad_region["DDBStreamBatchInfo"]["streamArn"] = stream_arn.replace(":us-east-1:", ":us-east-1\x00evil:")
    hostile = [letter(huge_key), json.dumps(json.loads(letter(infinite))), json.dumps(bad_region)]
    good = put("good", 4, v=4)
    send(sync.queue_url, *hostile, letter(good))

    assert redrive() == 1

    assert sync.docs()["good"] == {"pk": "good", "v": 4}
    assert sorted(bodies(parking)) == sorted(hostile)
    out = capsys.readouterr().out
    assert summary_line(out, "refused") + summary_line(out, "unreadable") == 3


def test_a_refused_newer_record_never_gets_an_older_message_deleted(sync, things, capsys):
    sync.deliver(put("a", 1, age=30))  # maps "age" as a number
    older = letter(put("b", 2, age=5))
    newer = letter(put("b", 3, age="thirty"))  # the item now holds a value the mapping refuses
    send(sync.queue_url, older, newer)

    assert redrive() == 1

    left = bodies(sync.queue_url)
    assert older in left  # kept: only the newer message's own fate was decided
    (again,) = [json.loads(text) for text in left if text != older]
    assert again["attempts"] == 2 and again["error"]["class"] in PARSING_ERRORS


def test_redrive_without_a_table_exits_2_and_writes_nothing(sync, capsys, monkeypatch):
    monkeypatch.delenv("TABLE_NAME", raising=False)
    monkeypatch.delenv("INDEX_NAME", raising=False)
    send(sync.queue_url, tampered(put_unbound(), index=f".{sync.alias}"))
    before = indices(sync)

    assert redrive() == 2

    assert indices(sync) == before
    assert "TABLE_NAME is required" in capsys.readouterr().err
    assert counts(sync.queue_url) == (1, 0)


def put_unbound() -> dict[str, Any]:
    create_table(TABLE)
    return put("a", 1, v=1)
