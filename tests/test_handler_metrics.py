"""The handler's EMF line on the real Elasticsearch: one per invocation, valid, and counting what
the batch did for each outcome; the lag from the records' times with an injected clock."""

from __future__ import annotations

import time

import pytest

import emf_spec
from stream_events import SEQUENCE_BASE, event, put, record, remove
from indexer import handler as lambda_handler
from indexer.apply import Deadline
from indexer.metrics import BatchMetrics

pytestmark = pytest.mark.es


def emitted(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    return emf_spec.documents(capsys.readouterr().out)


def insert(pk: str, sequence: int, **attributes: str) -> dict:
    image = {"pk": {"S": pk}, **{name: {"S": value} for name, value in attributes.items()}}
    return record("INSERT", {"pk": {"S": pk}}, image, sequence)


def aged(rec: dict, seconds: float) -> dict:
    rec["dynamodb"]["ApproximateCreationDateTime"] = seconds
    return rec


def test_one_line_per_invocation_counts_every_outcome(sync, capsys):
    sync.deliver(put("stale", 50), put("conflict", 1), put("gone", 1), put("typed", 1, age=30))
    # A new container: its cache of what it wrote is empty, so the INSERT below meets the
    # document the earlier container wrote as a conflict (a warm one would know its revision).
    lambda_handler.reset()
    capsys.readouterr()
    an_hour_ago = time.time() - 3600
    response = sync.deliver(
        aged(put("new", 60, v="x"), an_hour_ago),      # indexed
        aged(insert("conflict", 61), an_hour_ago),     # an INSERT of a document that exists: 409, then indexed
        aged(remove("gone", 62), an_hour_ago),          # deleted
        aged(put("stale", 2), an_hour_ago),             # older than what the index holds
        aged(put("typed2", 63, age="thirty"), an_hour_ago),  # refused by the mapping: dead-lettered
        aged(put("new", 59, v="older"), an_hour_ago),   # superseded inside the batch
    )
    assert response == {"batchItemFailures": []}
    assert set(sync.docs()) == {"stale", "conflict", "typed", "new"}
    assert len(sync.dead_letters()) == 1
    (document,) = emitted(capsys)
    assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "DynamoDBIndexer"
    assert document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Alias"]]
    assert document["Alias"] == sync.alias
    counts = {name: document[name] for name in (
        "RecordsReceived", "RecordsIndexed", "RecordsDeleted", "RecordsStale", "RecordsSuperseded",
        "RecordsDeadLettered", "RecordsFailed", "VersionConflicts", "BulkRequests")}
    assert counts == {
        "RecordsReceived": 6, "RecordsIndexed": 2, "RecordsDeleted": 1, "RecordsStale": 1,
        "RecordsSuperseded": 1, "RecordsDeadLettered": 1, "RecordsFailed": 0, "VersionConflicts": 1,
        # The guarded write of new, conflict, gone, typed2; then conflict again after reading it.
        "BulkRequests": 2,
    }
    assert document["BulkBytes"] > 0 and len(document["BulkLatency"]) == 2
    # An hour old when delivered: both lags are at least that (the clock only moves forward).
    assert document["OldestRecordAge"] >= 3_600_000 and document["ReplicationLag"] >= 3_600_000


def test_records_the_dead_letter_queue_refuses_count_as_failed(sync, capsys):
    sync.configure(DLQ_URL=sync.queue_url + "-missing")
    bad = put("b", 2)
    bad["dynamodb"]["NewImage"]["x"] = {"N": "not a number"}
    response = sync.deliver(put("a", 1, v=1), bad, put("c", 3, v=3))
    assert response == {"batchItemFailures": [{"itemIdentifier": str(SEQUENCE_BASE + 2)}]}
    (document,) = emitted(capsys)
    assert (document["RecordsIndexed"], document["RecordsDeadLettered"], document["RecordsFailed"]) == (2, 0, 1)


def test_a_batch_with_nothing_to_write_has_no_lag_but_still_counts(sync, capsys):
    sync.deliver(put("a", 5))
    capsys.readouterr()
    sync.deliver(put("a", 5))
    (document,) = emitted(capsys)
    assert document["RecordsStale"] == 1 and document["BulkRequests"] == 0
    assert "ReplicationLag" not in document and "BulkLatency" not in document
    assert "OldestRecordAge" in document


def test_metrics_off_prints_no_line(sync, capsys):
    sync.configure(METRICS="off")
    assert sync.deliver(put("a", 1)) == {"batchItemFailures": []}
    out = capsys.readouterr().out
    assert '"batch_done"' in out and emf_spec.documents(out) == []


def test_namespace_and_function_name_come_from_the_environment(sync, capsys):
    sync.configure(METRICS_NAMESPACE="Shop/Search", AWS_LAMBDA_FUNCTION_NAME="shop-prod-indexer")
    sync.deliver(put("a", 1))
    (document,) = emitted(capsys)
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Shop/Search"
    assert directive["Dimensions"] == [["Alias", "FunctionName"]]
    assert document["FunctionName"] == "shop-prod-indexer"


def test_lag_runs_from_the_record_to_the_acknowledged_write_on_an_injected_clock(sync):
    """Two new documents, one bulk request: the wall clock is read at the start (T0) and when
    the bulk is answered (T0 + 2 s); records created 3 s and 1 s before T0."""
    t0 = 1_795_737_074.0
    readings = iter([t0, t0 + 2.0])
    batch = BatchMetrics(wall=lambda: next(readings))
    summary = lambda_handler.pipeline().run(
        event(aged(put("a", 1), t0 - 3.0), aged(put("b", 2), t0 - 1.0)), Deadline.after(30), batch)
    assert summary.indexed == 2 and batch.bulk_requests == 1
    assert batch.oldest_record_age_ms == 3_000.0
    assert batch.replication_lag_ms == 5_000.0
