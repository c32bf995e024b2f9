"""The Lambda handler against the real Elasticsearch, with a moto dead-letter queue."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
from structlog.testing import capture_logs

from conftest import LambdaContext
from stream_events import SEQUENCE_BASE, put, record, remove, sample_event
from indexer import handler as lambda_handler

pytestmark = pytest.mark.es

# The moto sample holds lists that mix types ([1, "two"], ["a", 2, {...}]): Elasticsearch cannot
# index those under one field type, so the index maps them as stored-but-not-indexed.
MIXED_LISTS_MAPPING = json.dumps(
    {
        "mappings": {
            "properties": {
                "l": {"type": "object", "enabled": False},
                "m": {"properties": {"deep": {"properties": {"l": {"type": "object", "enabled": False}}}}},
            }
        }
    }
)


def test_every_event_and_attribute_type_from_moto_lands_as_the_contract_says(sync):
    sync.configure(INDEX_MAPPING=MIXED_LISTS_MAPPING)
    response = sync.invoke(sample_event("lambda_event_moto.json"))
    assert response == {"batchItemFailures": []}
    docs = sync.docs()
    assert set(docs) == {"all-types|1", "user/123\\#profile|0", "to-update|-5"}  # to-delete is gone
    assert docs["to-update|-5"] == {"pk": "to-update", "sk": -5, "count": 2, "status": "updated"}
    assert docs["user/123\\#profile|0"]["name"] == "Replaced"
    everything = docs["all-types|1"]
    assert everything["n_big"] == 12345678901234567890123456789012345678
    assert everything["ns"] == [-2, 1.5, 3] and everything["ss"] == ["a", "b", "c"]
    assert everything["bs"] == ["AQI=", "/w=="] and everything["b"] == "AAH/YmluYXJ5"
    assert everything["l"] == ["a", 2, False, None, {"k": "v"}, []]
    assert everything["m"] == {"inner": "x", "deep": {"n": 7, "l": [1, "two"]}}
    assert everything["uni"] == "héllo wörld — 日本語 🚀" and everything["empty_s"] == ""
    assert everything["nul"] is None and everything["t"] is True and everything["f"] is False
    assert sync.dead_letters() == []


def test_the_aws_sample_with_a_ttl_delete_leaves_nothing_behind(sync):
    response = sync.invoke(sample_event("lambda_event_aws_sample.json"))
    assert response == {"batchItemFailures": []}
    assert sync.docs() == {}
    assert sync.raw("101")["_ddb"]["deleted"] is True  # the tombstone remembers the delete


def test_tombstones_never_show_through_the_alias(sync):
    sync.deliver(put("a", 1, v=1), put("b", 2, v=2), remove("a", 3))
    sync.es.indices.refresh(index=sync.alias)
    assert sync.es.count(index=sync.alias)["count"] == 1
    assert set(sync.docs()) == {"b"}


def test_odd_keys_each_get_their_own_document(sync):
    keys = [
        {"pk": {"S": "a|b"}, "sk": {"S": "c"}},
        {"pk": {"S": "a"}, "sk": {"S": "b|c"}},
        {"pk": {"S": "ключ 🔑 #1"}, "sk": {"N": "1.50"}},
        {"pk": {"S": "x" * 2048}, "sk": {"S": "y" * 1024}},
        {"pk": {"B": "AAH/"}, "sk": {"N": "-0"}},
    ]
    records = [record("INSERT", key, {**key, "n": {"N": str(i)}}, i + 1) for i, key in enumerate(keys)]
    assert sync.deliver(*records) == {"batchItemFailures": []}
    docs = sync.docs()
    assert len(docs) == 5
    assert sorted(doc["n"] for doc in docs.values()) == [0, 1, 2, 3, 4]
    assert all(len(doc_id.encode()) <= 512 for doc_id in docs)


def test_duplicates_in_one_batch_apply_once(sync):
    first = put("a", 1, v="one")
    with capture_logs() as logs:
        response = sync.deliver(first, copy.deepcopy(first), copy.deepcopy(first))
    assert response == {"batchItemFailures": []}
    assert sync.docs() == {"a": {"pk": "a", "v": "one"}}
    summary = next(entry for entry in logs if entry["event"] == "batch_done")
    assert summary["indexed"] == 1 and summary["superseded"] == 2


def test_an_older_record_redelivered_after_a_newer_one_does_not_win(sync):
    sync.deliver(put("a", 2, v="new"))
    with capture_logs() as logs:
        assert sync.deliver(put("a", 1, v="old")) == {"batchItemFailures": []}
    assert sync.docs() == {"a": {"pk": "a", "v": "new"}}
    assert next(e for e in logs if e["event"] == "batch_done")["stale"] == 1


def test_a_delete_is_not_undone_by_a_late_older_insert(sync):
    sync.deliver(put("a", 1, v="one"), remove("a", 5))
    sync.deliver(put("a", 3, v="late"))
    sync.deliver(record("INSERT", {"pk": {"S": "a"}}, {"pk": {"S": "a"}, "v": {"S": "older"}}, 2))
    assert sync.docs() == {}


def test_a_whole_batch_delivered_twice_changes_nothing_the_second_time(sync):
    batch = [put("a", 1, v=1), put("b", 2, v=2), put("a", 3, v=3), remove("b", 4), put("c", 5, v=5)]
    sync.deliver(*batch)
    before = sync.docs()
    with capture_logs() as logs:
        assert sync.deliver(*copy.deepcopy(batch)) == {"batchItemFailures": []}
    assert sync.docs() == before == {"a": {"pk": "a", "v": 3}, "c": {"pk": "c", "v": 5}}
    summary = next(e for e in logs if e["event"] == "batch_done")
    assert summary["stale"] == 3 and summary["indexed"] == 0 and summary["deleted"] == 0


def test_a_mapping_conflict_dead_letters_that_record_and_indexes_the_rest(sync):
    sync.deliver(put("a", 1, age=30))  # maps "age" as a number
    response = sync.deliver(put("b", 2, age="thirty"), put("c", 3, age=40), remove("a", 4))
    assert response == {"batchItemFailures": []}
    assert sync.docs() == {"c": {"pk": "c", "age": 40}}
    (letter,) = sync.dead_letters()
    # Elasticsearch ≥ 8.8 and OpenSearch name the same refusal differently.
    assert letter["error"]["class"] in ("document_parsing_exception", "mapper_parsing_exception")
    assert "age" in letter["error"]["message"]
    assert letter["record"]["dynamodb"]["NewImage"]["age"] == {"S": "thirty"}
    assert letter["sequence_number"] == str(SEQUENCE_BASE + 2)
    assert letter["doc_id"] == "b" and letter["index"] == sync.alias and letter["attempts"] == 1
    assert letter["failed_at"].endswith("Z")


def test_a_list_mixing_types_is_dead_lettered_under_the_default_mapping(sync):
    response = sync.invoke(sample_event("lambda_event_moto.json"))
    assert response == {"batchItemFailures": []}
    (letter,) = sync.dead_letters()
    assert letter["doc_id"] == "all-types|1"
    assert "cannot be changed from type" in letter["error"]["message"]
    assert set(sync.docs()) == {"user/123\\#profile|0", "to-update|-5"}


def test_an_unreachable_dead_letter_queue_reports_the_records_instead_of_losing_them(sync):
    sync.configure(DLQ_URL=sync.queue_url + "-missing")
    bad = put("b", 2)
    bad["dynamodb"]["NewImage"]["x"] = {"N": "not a number"}
    response = sync.deliver(put("a", 1, v=1), bad, put("c", 3, v=3))
    assert response == {"batchItemFailures": [{"itemIdentifier": str(SEQUENCE_BASE + 2)}]}
    assert set(sync.docs()) == {"a", "c"}


def test_a_malformed_record_without_sequence_number_is_named_by_the_one_before_it(sync):
    sync.configure(DLQ_URL=sync.queue_url + "-missing")
    response = sync.deliver(put("a", 1), {"eventName": "INSERT"}, put("c", 3))
    assert response == {"batchItemFailures": [{"itemIdentifier": str(SEQUENCE_BASE + 1)}]}


def test_logs_carry_counts_and_reasons_but_no_item_images(sync):
    secret = "4111-1111-1111-1111"
    bad = put("b", 2, card=secret)
    bad["dynamodb"]["NewImage"]["x"] = {"BOOL": "yes"}
    with capture_logs() as logs:
        sync.deliver(put("a", 1, card=secret), bad)
    assert secret not in json.dumps(logs, default=str)
    summary = next(e for e in logs if e["event"] == "batch_done")
    assert summary["log_level"] == "info"
    assert {k: summary[k] for k in ("records", "indexed", "dead_lettered", "failed")} == {
        "records": 2, "indexed": 1, "dead_lettered": 1, "failed": 0}
    assert isinstance(summary["ms"], float)
    warning = next(e for e in logs if e["event"] == "record_dead_lettered")
    assert warning["log_level"] == "warning" and "BOOL" in warning["reason"]


def test_clients_are_built_once_and_reused_across_warm_invocations(sync):
    sync.deliver(put("a", 1))
    first = lambda_handler.pipeline()
    sync.deliver(put("b", 2))
    assert lambda_handler.pipeline() is first


def test_importing_the_handler_opens_no_connection_and_skips_boto3():
    code = (
        "import sys, socket\n"
        "def refuse(*a, **k): raise AssertionError('network at import time')\n"
        "socket.socket.connect = refuse\n"
        "import indexer.handler\n"
        "print('boto3' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_missing_dlq_url_fails_fast_naming_the_variable(sync):
    sync.configure(DLQ_URL=None)
    with pytest.raises(Exception, match="DLQ_URL is required"):
        sync.deliver(put("a", 1))


def test_elasticsearch_down_reports_every_record_and_a_retry_after_restart_converges(sync, private_es):
    # Giving up is bounded by attempts here, not by the clock, so a slow machine changes
    # nothing; that no retry starts past Lambda's remaining time is tested in
    # test_apply_retries.py without a clock.
    sync.configure(ELASTICSEARCH_URL=private_es.url, RETRY_MAX_ATTEMPTS="3")
    sync.es = private_es.client()
    batch = [put("a", 1, v=1), put("b", 2, v=2), remove("a", 3), put("c", 4, v=4)]
    sync.deliver(put("a", 0, v=0))  # the index exists before the outage
    private_es.stop()
    with capture_logs() as logs:
        response = sync.deliver(*batch, context=LambdaContext(600))
    assert response == {
        "batchItemFailures": [{"itemIdentifier": str(SEQUENCE_BASE + n)} for n in (1, 2, 3, 4)]
    }
    retries = [e for e in logs if e["event"] == "retrying"]
    assert len(retries) == 2, "transient failures are retried before giving up"
    summary = next(e for e in logs if e["event"] == "batch_done")
    assert summary["failed"] == 4
    private_es.start()
    assert sync.deliver(*batch, context=LambdaContext(60)) == {"batchItemFailures": []}
    assert sync.docs() == {"b": {"pk": "b", "v": 2}, "c": {"pk": "c", "v": 4}}
    sync.es.close()


def test_big_refused_records_are_all_dead_lettered_within_the_sqs_batch_limit(sync):
    sync.deliver(put("a", 1, age=30))  # maps "age" as a number
    big = "x" * 190_000
    refused = [put(f"b{n}", 2 + n, age="thirty", blob=big) for n in range(6)]
    assert sync.deliver(*refused) == {"batchItemFailures": []}
    letters = sync.dead_letters()
    assert sorted(letter["doc_id"] for letter in letters) == [f"b{n}" for n in range(6)]


def test_a_record_is_logged_dead_lettered_only_once_the_queue_took_it(sync):
    sync.configure(DLQ_URL=sync.queue_url + "-missing")
    bad = put("b", 2)
    bad["dynamodb"]["NewImage"]["x"] = {"N": "not a number"}
    with capture_logs() as logs:
        response = sync.deliver(bad)
    assert response == {"batchItemFailures": [{"itemIdentifier": bad["dynamodb"]["SequenceNumber"]}]}
    assert not [e for e in logs if e["event"] == "record_dead_lettered"]


@pytest.mark.parametrize("name, value", [("_ddb.deleted", {"BOOL": True}), ("_ddb.deleted", {"S": "true"})])
def test_an_attribute_that_would_hide_the_item_is_dead_lettered_not_hidden(sync, name, value):
    bad = put("b", 2)
    bad["dynamodb"]["NewImage"][name] = value
    assert sync.deliver(put("a", 1), bad) == {"batchItemFailures": []}
    (letter,) = sync.dead_letters()
    assert letter["record"]["dynamodb"]["Keys"] == {"pk": {"S": "b"}}
    assert letter["error"]["class"] == "reserved_attribute"
    assert set(sync.docs()) == {"a"}
    assert sync.raw("b") is None  # nothing written that the alias would hide


def test_a_dotted_name_beside_a_map_holding_the_same_path_is_dead_lettered(sync):
    bad = put("b", 2)
    bad["dynamodb"]["NewImage"].update({"a.b": {"N": "1"}, "a": {"M": {"b": {"N": "2"}}}})
    assert sync.deliver(bad) == {"batchItemFailures": []}
    (letter,) = sync.dead_letters()
    assert letter["error"]["class"] == "colliding_attribute_names"
