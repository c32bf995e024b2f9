"""``python -m replay --redrive`` against the real Elasticsearch, with moto SQS, DynamoDB and Streams.

Dead-letter messages are produced by the real handler where the point is the round trip
(mapping conflicts, Elasticsearch down), and built with the handler's own ``deadletter``
functions where the point is one case of the redrive.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from conftest import LambdaContext
import stream_events
from indexer import convert, deadletter
from indexer import handler as lambda_handler
from indexer.apply import Deadline, RetryPolicy
from indexer.errors import RecordError, RetryableError
from indexer.ids import document_id
from indexer.layout import ALIAS_FILTER, index_body
from indexer.records import RESERVED_FIELD
from indexer.settings import Settings
from indexer.localsync.streams import lambda_record
from replay import cli
from replay.redrive import engine as redrive_engine
from replay.redrive.readback import Readback
from replay.redrive.trust import Binding
from replay.redrive.sqs import Queue

pytestmark = pytest.mark.es
#: Elasticsearch ≥ 8.8 and OpenSearch name the same refusal differently.
PARSING_ERRORS = ("document_parsing_exception", "mapper_parsing_exception")

ROOT = Path(__file__).resolve().parents[1]
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:indexer"


TABLE = "Things"


@pytest.fixture(autouse=True)
def _no_long_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    # moto answers a long poll on an empty queue only after the wait; short polls are exact there.
    monkeypatch.setattr(redrive_engine, "RECEIVE_WAIT_SECONDS", 0)


@pytest.fixture
def things(sync, monkeypatch: pytest.MonkeyPatch) -> str:
    """The run's table (TABLE_NAME) with a stream; its stream ARN. A redrive run is bound to
    one table, and the stream vouches for every dead letter's sequence number."""
    monkeypatch.setenv("TABLE_NAME", TABLE)
    return create_table(TABLE)


def put(pk: str, sequence: int = 0, **attributes: Any) -> dict[str, Any]:
    """Write item ``pk`` to the table; the stream record it made, as Lambda delivers it.
    ``sequence`` only names the order in the test: the stream numbers records as they come."""
    image = stream_events.put(pk, sequence, **attributes)["dynamodb"]["NewImage"]
    boto3.client("dynamodb").put_item(TableName=TABLE, Item=image)
    return last_record()


def remove(pk: str, sequence: int = 0) -> dict[str, Any]:
    boto3.client("dynamodb").delete_item(TableName=TABLE, Key={"pk": {"S": pk}})
    return last_record()


def last_record() -> dict[str, Any]:
    arn = boto3.client("dynamodb").describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
    return stream_records(arn)[1][-1]


def binding(sync) -> Binding:
    arn = boto3.client("dynamodb").describe_table(TableName=TABLE)["Table"]["TableArn"]
    return Binding(TABLE, arn, sync.alias)


# -- helpers -------------------------------------------------------------------------------


def redrive(*flags: str) -> int:
    return cli.main(["--redrive", "--no-progress", *flags])


def letter(stream_record: dict[str, Any], attempts: int = 1, kind: str = "document_parsing_exception") -> str:
    """A dead-letter message exactly as the handler sends it."""
    error = RecordError(kind, "refused earlier")
    return deadletter.encoded(deadletter.message(deadletter.Letter(stream_record, error, attempts), deadletter.now()))


def send(queue_url: str, *bodies: str) -> None:
    sqs = boto3.client("sqs")
    for body in bodies:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)


def bodies(queue_url: str) -> list[str]:
    """Every message in the queue, left in it and visible again."""
    sqs = boto3.client("sqs")
    found, receipts = [], []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=30).get("Messages", [])
        if not got:
            break
        found += [m["Body"] for m in got]
        receipts += [m["ReceiptHandle"] for m in got]
    for receipt in receipts:
        sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=receipt, VisibilityTimeout=0)
    return found


def counts(queue_url: str) -> tuple[int, int]:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def snapshot(sync) -> dict[tuple[str, str], tuple[int, int, dict[str, Any]]]:
    """Every stored document (tombstones too) of every index behind the alias, with the revision
    Elasticsearch gave it: a redrive that writes anything changes this."""
    sync.es.indices.refresh(index=f"{sync.alias}-*")
    hits = sync.es.search(index=f"{sync.alias}-*", size=1000, seq_no_primary_term=True, version=True)["hits"]["hits"]
    return {(h["_index"], h["_id"]): (h["_seq_no"], h["_version"], h["_source"]) for h in hits}


def summary_line(out: str, label: str) -> int:
    """The count on the summary's ``label`` line (indented; per-message lines are not)."""
    for text in out.splitlines():
        if text.startswith("  ") and text.strip().startswith(label):
            return int(text.strip()[len(label):].split()[0])
    raise AssertionError(f"no {label!r} line in:\n{out}")


def create_table(name: str) -> str:
    """A moto table with a NEW_AND_OLD_IMAGES stream; its stream ARN."""
    return boto3.client("dynamodb").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )["TableDescription"]["LatestStreamArn"]


def stream_records(stream_arn: str) -> tuple[str, list[dict[str, Any]]]:
    """The shard id and every record of the table's stream, as Lambda delivers them."""
    streams = boto3.client("dynamodbstreams")
    (shard,) = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(
        StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    got = streams.get_records(ShardIterator=iterator, Limit=1000)["Records"]
    return shard["ShardId"], [lambda_record(r, stream_arn) for r in got]


def on_failure(stream_arn: str, shard_id: str, batch: list[dict[str, Any]]) -> str:
    """What Lambda sends an on-failure destination for a batch it gave up on (AWS's shape)."""
    return json.dumps({
        "requestContext": {"requestId": "5d0d5f7e-5cd4-4d3a-8f4e-8d0b1d0d3b8e", "functionArn": FUNCTION_ARN,
                           "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 3},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": "2026-11-27T00:38:06.021Z",
        "DDBStreamBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": batch[0]["dynamodb"]["SequenceNumber"],
            "endSequenceNumber": batch[-1]["dynamodb"]["SequenceNumber"],
            "approximateArrivalOfFirstRecord": "2026-11-27T00:38:04Z",
            "approximateArrivalOfLastRecord": "2026-11-27T00:38:05Z",
            "batchSize": len(batch),
            "streamArn": stream_arn,
        },
    })


def table_documents(table: str) -> dict[str, dict[str, Any]]:
    """What the alias must show for the table: one converted document per item."""
    items = boto3.client("dynamodb").scan(TableName=table, ConsistentRead=True)["Items"]
    shaped = [lambda_record({"NewImage": item}, "")["NewImage"] for item in items]
    return {document_id({"pk": image["pk"]}): convert.item(image) for image in shaped}


# -- the cases -----------------------------------------------------------------------


def test_records_dead_lettered_by_a_mapping_conflict_are_indexed_once_the_mapping_is_fixed(sync, things, capsys):
    sync.deliver(put("a", 1, age=30))  # maps "age" as a number
    assert sync.deliver(put("b", 2, age="thirty"), put("c", 3, age="forty")) == {"batchItemFailures": []}
    assert counts(sync.queue_url) == (2, 0)
    # The fix: an index whose mapping takes both, behind the alias, with what it already held.
    sync.es.indices.create(index=f"{sync.alias}-fixed",
                           **index_body({"mappings": {"properties": {"age": {"type": "keyword"}}}}))
    sync.es.indices.update_aliases(actions=[
        {"remove": {"index": f"{sync.alias}-initial", "alias": sync.alias}},
        {"add": {"index": f"{sync.alias}-fixed", "alias": sync.alias, "filter": ALIAS_FILTER, "is_write_index": True}},
    ])
    sync.configure()
    sync.deliver(put("a", 1, age=30))

    assert redrive() == 0

    assert sync.docs() == {"a": {"pk": "a", "age": 30},
                           "b": {"pk": "b", "age": "thirty"}, "c": {"pk": "c", "age": "forty"}}
    assert counts(sync.queue_url) == (0, 0)
    out = capsys.readouterr().out
    assert summary_line(out, "redriven") == 2 and "2 records indexed" in out


def test_a_stale_dead_letter_is_skipped_and_the_index_is_unchanged(sync, things, capsys):
    sync.deliver(put("b", 1, age=1))
    sync.deliver(put("b", 2, age="thirty"))  # dead-lettered: "age" is a number
    sync.deliver(put("b", 5, age=50))  # a newer change of the same item is indexed
    before = snapshot(sync)

    assert redrive() == 0

    assert snapshot(sync) == before
    assert sync.docs() == {"b": {"pk": "b", "age": 50}}
    assert counts(sync.queue_url) == (0, 0)
    assert summary_line(capsys.readouterr().out, "stale") == 1


def test_an_on_failure_message_for_a_range_still_in_the_stream_applies_those_records(sync, things, capsys):
    stream_arn = things
    dynamodb = boto3.client("dynamodb")
    for name in ("a", "b", "c"):
        dynamodb.put_item(TableName="Things", Item={"pk": {"S": name}, "v": {"N": "1"}})
    dynamodb.update_item(TableName="Things", Key={"pk": {"S": "a"}}, UpdateExpression="SET v = :v",
                         ExpressionAttributeValues={":v": {"N": "2"}})
    dynamodb.delete_item(TableName="Things", Key={"pk": {"S": "b"}})
    shard_id, records = stream_records(stream_arn)
    sync.deliver(*records[:1])  # the first record made it; Lambda gave up on the other four
    send(sync.queue_url, on_failure(stream_arn, shard_id, records[1:]))

    assert redrive() == 0

    assert sync.docs() == table_documents("Things") == {"a": {"pk": "a", "v": 2}, "c": {"pk": "c", "v": 1}}
    assert sync.raw("b")[RESERVED_FIELD]["deleted"] is True
    assert counts(sync.queue_url) == (0, 0)
    out = capsys.readouterr().out
    assert "2 records indexed, 1 deleted" in out  # b's INSERT is superseded by its REMOVE


def test_records_of_a_range_refused_again_are_re_queued_with_their_payload(sync, things, capsys):
    stream_arn = things
    dynamodb = boto3.client("dynamodb")
    dynamodb.put_item(TableName="Things", Item={"pk": {"S": "a"}, "age": {"N": "30"}})
    dynamodb.put_item(TableName="Things", Item={"pk": {"S": "b"}, "age": {"S": "thirty"}})
    shard_id, records = stream_records(stream_arn)
    send(sync.queue_url, on_failure(stream_arn, shard_id, records))

    assert redrive() == 1

    assert sync.docs() == {"a": {"pk": "a", "age": 30}}
    (left,) = [json.loads(text) for text in bodies(sync.queue_url)]
    assert left["type"] == deadletter.MESSAGE_TYPE and left["attempts"] == 2 and left["doc_id"] == "b"
    assert left["record"] == records[1] and left["error"]["class"] in PARSING_ERRORS
    assert "failed again" in capsys.readouterr().out


def test_an_on_failure_message_whose_range_is_gone_is_reported_and_kept(sync, things, capsys):
    put("a", 1)
    shard_id, (record,) = stream_records(things)
    # A range the stream does not hold, as after its 24-hour trim (moto trims nothing).
    record["dynamodb"]["SequenceNumber"] = str(int(record["dynamodb"]["SequenceNumber"]) + 5)
    records = [record]
    message = on_failure(things, shard_id, records)
    send(sync.queue_url, message)

    assert redrive() == 1

    out = capsys.readouterr().out
    sequence = records[0]["dynamodb"]["SequenceNumber"]
    assert summary_line(out, "gone") == 1
    assert shard_id in out and f"{sequence}..{sequence}" in out and "python -m replay --full" in out
    assert bodies(sync.queue_url) == [message]  # still there, and visible again


def test_unreadable_messages_are_reported_and_left_in_the_queue(sync, things, capsys):
    unreadable = ["not json at all", json.dumps({"hello": "world"}), "[1, 2]",
                  json.dumps({"KinesisBatchInfo": {"shardId": "x"}}),
                  json.dumps({"DDBStreamBatchInfo": {"shardId": "short", "streamArn": "nope"}})]
    send(sync.queue_url, *unreadable)

    assert redrive() == 1

    out = capsys.readouterr().out
    assert summary_line(out, "unreadable") == 5
    assert '"not json at all"' in out  # the first bytes of each
    assert sorted(bodies(sync.queue_url)) == sorted(unreadable)


def test_unreadable_messages_move_to_the_parking_queue_when_one_is_given(sync, things, capsys):
    parking = boto3.client("sqs").create_queue(QueueName=f"parked-{sync.alias}")["QueueUrl"]
    send(sync.queue_url, "garbage \u2603", letter(put("a", 1, v=1)))

    assert redrive("--parking-queue-url", parking) == 1

    assert bodies(parking) == ["garbage \u2603"]  # byte for byte
    assert counts(sync.queue_url) == (0, 0)
    assert sync.docs() == {"a": {"pk": "a", "v": 1}}
    out = capsys.readouterr().out
    assert summary_line(out, "unreadable") == 1 and "moved to the parking queue" in out


def test_a_redrive_run_twice_changes_nothing_the_second_time(sync, things, capsys):
    messages = [letter(put("a", 1, v=1)), letter(put("b", 2, v=2)), letter(put("a", 3, v=3)), letter(remove("b", 4))]
    send(sync.queue_url, *messages)
    assert redrive() == 0
    after_first = snapshot(sync)
    assert sync.docs() == {"a": {"pk": "a", "v": 3}}
    # As if the first run had died before deleting, or a second run had received them too.
    send(sync.queue_url, *messages)
    capsys.readouterr()

    assert redrive() == 0

    assert snapshot(sync) == after_first
    assert counts(sync.queue_url) == (0, 0)
    out = capsys.readouterr().out
    assert summary_line(out, "stale") == 4 and summary_line(out, "redriven") == 0


def test_dry_run_says_what_would_happen_and_changes_nothing(sync, things, capsys):
    old = put("old", 2, v=2)
    sync.deliver(put("old", 5, v=5))
    bogus = put("x", 9)
    bogus["eventName"] = "REMOVE"  # tampered: the stream says otherwise
    messages = [letter(put("new", 1, v=1)), letter(old), "{{garbage", letter(bogus, attempts=4)]
    send(sync.queue_url, *messages)
    before = snapshot(sync)
    capsys.readouterr()

    assert redrive("--dry-run") == 1

    assert snapshot(sync) == before
    assert sorted(bodies(sync.queue_url)) == sorted(messages)
    assert counts(sync.queue_url) == (4, 0)
    out = capsys.readouterr().out.splitlines()
    labels = ("would apply", "stale", "unreadable", "refused")
    assert sorted(next(label for label in labels if text.startswith(label)) for text in out[:4]) == sorted(labels)
    assert "nothing changed" in "\n".join(out)


def test_a_record_refused_again_is_re_queued_once_with_its_attempt_count_raised(sync, things, capsys):
    sync.deliver(put("a", 1, age=30))
    sync.deliver(put("b", 2, age="thirty"))  # still refused: the mapping was not fixed
    (original,) = [json.loads(text) for text in bodies(sync.queue_url)]

    assert redrive() == 1

    (again,) = [json.loads(text) for text in bodies(sync.queue_url)]  # not redriven twice in one run
    assert again["attempts"] == 2 and again["record"] == original["record"]
    assert again["error"]["class"] in PARSING_ERRORS and again["failed_at"] >= original["failed_at"]
    out = capsys.readouterr().out
    assert summary_line(out, "failed again") == 1 and "re-queued as attempt 2 of 5" in out


def test_a_message_reaching_max_attempts_moves_to_the_default_parking_queue(sync, things, capsys):
    parking = boto3.client("sqs").create_queue(QueueName=f"dlq-{sync.alias}-parking")["QueueUrl"]
    sync.deliver(put("a", 1, age=30))
    bad = put("b", 2, age="thirty")  # still refused: the mapping was not fixed
    send(sync.queue_url, letter(bad, attempts=2))

    assert redrive("--max-attempts", "3") == 1

    assert counts(sync.queue_url) == (0, 0)
    (parked,) = [json.loads(text) for text in bodies(parking)]
    assert parked["attempts"] == 3 and parked["record"] == bad and parked["error"]["class"] in PARSING_ERRORS
    assert summary_line(capsys.readouterr().out, "parked") == 1


def test_without_a_parking_queue_a_message_past_max_attempts_stays_and_the_summary_says_so(sync, things, capsys):
    sync.deliver(put("a", 1, age=30))
    send(sync.queue_url, letter(put("b", 2, age="thirty"), attempts=5))

    assert redrive() == 1

    (left,) = [json.loads(text) for text in bodies(sync.queue_url)]
    assert left["attempts"] == 6
    out = capsys.readouterr().out
    assert "no parking queue" in out and f"dlq-{sync.alias}-parking" in out


def test_a_record_sent_without_its_images_is_completed_from_the_table(sync, things, capsys):
    stream_arn = things
    dynamodb = boto3.client("dynamodb")
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "kept"}, "v": {"N": "1"}})
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "gone"}, "v": {"N": "1"}})
    _, first = stream_records(stream_arn)
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "kept"}, "v": {"N": "2"}, "w": {"B": b"\x00\xff"}})
    dynamodb.delete_item(TableName=TABLE, Key={"pk": {"S": "gone"}})
    for stream_record in first:  # dead-lettered without images, as a too-large record is
        body = json.loads(letter(stream_record))
        del body["record"]["dynamodb"]["NewImage"]
        send(sync.queue_url, json.dumps({**body, "images_omitted": True}))

    assert redrive() == 0

    assert sync.docs() == {"kept": {"pk": "kept", "v": 2, "w": "AP8="}}
    assert sync.raw("kept")[RESERVED_FIELD]["seq"].lstrip("0") == first[0]["dynamodb"]["SequenceNumber"]
    assert sync.raw("gone")[RESERVED_FIELD]["deleted"] is True
    # The later records still apply on top: they carry higher sequence numbers.
    _, every = stream_records(stream_arn)
    assert sync.deliver(*every[2:]) == {"batchItemFailures": []}
    assert sync.docs() == table_documents(TABLE)


def test_elasticsearch_down_during_live_sync_then_redrive_makes_the_alias_equal_the_table(sync, things, private_es, capsys):
    sync.configure(ELASTICSEARCH_URL=private_es.url)
    sync.es = private_es.client()
    stream_arn = things
    dynamodb = boto3.client("dynamodb")
    for name in ("a", "b", "c"):
        dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": name}, "v": {"N": "1"}})
    shard_id, records = stream_records(stream_arn)
    assert sync.deliver(*records) == {"batchItemFailures": []}

    private_es.stop()
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "a"}, "v": {"N": "2"}})
    dynamodb.delete_item(TableName=TABLE, Key={"pk": {"S": "b"}})
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "d"}, "v": {"N": "4"}})
    _, every = stream_records(stream_arn)
    batch = every[len(records):]
    response = sync.deliver(*batch, context=LambdaContext(4.0))
    assert len(response["batchItemFailures"]) == 3  # Lambda retries, then gives up on the range:
    send(sync.queue_url, on_failure(stream_arn, shard_id, batch))
    private_es.start()

    assert redrive("--elasticsearch-url", private_es.url) == 0

    assert sync.docs() == table_documents(TABLE) == {
        "a": {"pk": "a", "v": 2}, "c": {"pk": "c", "v": 1}, "d": {"pk": "d", "v": 4}}
    assert counts(sync.queue_url) == (0, 0)
    sync.es.close()


# -- safety and limits -----------------------------------------------------------------------


class _RacingStore:
    """The real store, but a live invocation writes just before redrive's first bulk write."""

    def __init__(self, real: Any, cut_in: Any) -> None:
        self._real, self._cut_in = real, cut_in

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def bulk(self, body: bytes, timeout: float) -> Any:
        if self._cut_in is not None:
            cut_in, self._cut_in = self._cut_in, None
            cut_in()
        return self._real.bulk(body, timeout)


def test_a_live_write_landing_during_redrive_wins_over_the_older_dead_letter(sync, things):
    sync.deliver(put("a", 1, v="one"))
    send(sync.queue_url, letter(put("a", 3, v="three")))
    settings = Settings.from_env(require=("DLQ_URL",))
    pipeline = lambda_handler.build_pipeline(settings)

    def live() -> None:
        summary = lambda_handler.build_pipeline(settings).run({"Records": [put("a", 7, v="seven")]}, Deadline.after(30))
        assert summary.indexed == 1

    run = redrive_engine.Redrive(
        store=_RacingStore(pipeline.store, live), targets=pipeline.targets, dlq=Queue(sync.queue_url), parking=None,
        readback=Readback(), binding=binding(sync), max_attempts=5,
    )
    summary = run.run()

    assert [r.outcome for r in summary.reports] == [redrive_engine.Outcome.STALE]
    assert sync.docs() == {"a": {"pk": "a", "v": "seven"}}
    assert counts(sync.queue_url) == (0, 0)


class _DownStore:
    """The real store for reads; every bulk write fails as a cluster going away does."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def bulk(self, body: bytes, timeout: float) -> Any:
        raise RetryableError("bulk write: cannot reach Elasticsearch (ConnectionError: refused)")


def test_a_cluster_failing_during_redrive_leaves_the_messages_unchanged_and_stops(sync, things):
    sync.deliver(put("z", 1))  # the index exists
    sent = [letter(put(name, n, v=n)) for n, name in enumerate("abcdefghijkl", start=2)]  # two batches' worth
    send(sync.queue_url, *sent)
    pipeline = lambda_handler.build_pipeline(Settings.from_env(require=("DLQ_URL",)))
    run = redrive_engine.Redrive(
        store=_DownStore(pipeline.store), targets=pipeline.targets, dlq=Queue(sync.queue_url), parking=None,
        readback=Readback(), binding=binding(sync), max_attempts=5,
        policy=RetryPolicy(max_attempts=2, initial_wait=0, jitter=0), sleep=lambda seconds: None,
    )
    summary = run.run()

    assert [r.outcome for r in summary.reports] == [redrive_engine.Outcome.UNRESOLVED] * 10  # stopped after one batch
    assert "ConnectionError" in summary.stopped and summary.exit_code() == 1
    assert sorted(bodies(sync.queue_url)) == sorted(sent)  # attempts not raised, nothing lost
    assert counts(sync.queue_url) == (12, 0)
    assert set(sync.docs()) == {"z"}


def test_max_messages_stops_after_that_many(sync, things, capsys):
    send(sync.queue_url, *(letter(put(name, n, v=n)) for n, name in enumerate("abc", start=1)))

    assert redrive("--max-messages", "2") == 0

    assert len(sync.docs()) == 2
    assert counts(sync.queue_url) == (1, 0)
    assert "from " + sync.queue_url + ": 2 messages" in capsys.readouterr().out


def test_a_queue_url_naming_no_queue_fails_with_one_line_and_exit_2(sync, things, capsys):
    assert redrive("--queue-url", sync.queue_url + "-nope") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "names no queue" in err and "-nope" in err


def test_a_parking_queue_url_naming_no_queue_fails_with_exit_2(sync, things, capsys):
    assert redrive("--parking-queue-url", sync.queue_url + "-nope") == 2
    assert "--parking-queue-url names no queue" in capsys.readouterr().err


def test_the_command_line_answers_help_and_names_a_missing_dlq_url():
    env = {k: v for k, v in os.environ.items() if k not in ("DLQ_URL",)}
    helped = subprocess.run([sys.executable, "-m", "replay", "--redrive", "--help"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "--max-attempts" in helped.stdout and "--dry-run" in helped.stdout
    missing = subprocess.run([sys.executable, "-m", "replay", "--redrive"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "DLQ_URL is required" in missing.stderr



def test_an_old_dead_letter_never_regresses_a_replayed_document(sync, things, capsys, monkeypatch):
    """The dead letter predates a full replay, whose snapshot of the item (sequence 0) is newer
    than the letter's record. Redrive applies the table's current item under the letter's
    sequence, so the document stays current instead of going back to the old image."""
    older = put("a", 1, v="two")
    boto3.client("dynamodb").put_item(TableName="Things", Item={"pk": {"S": "a"}, "v": {"S": "three"}})
    monkeypatch.setenv("TARGETS_TTL_SECONDS", "0.5")
    assert cli.main(["--full", "--no-progress"]) == 0
    assert sync.docs() == {"a": {"pk": "a", "v": "three"}}

    send(sync.queue_url, letter(older))  # older than the replay's snapshot
    assert redrive() == 0
    assert sync.docs() == {"a": {"pk": "a", "v": "three"}}
    assert counts(sync.queue_url) == (0, 0)


def test_a_redriven_table_state_still_wins_over_late_duplicates_of_records_it_saw(sync, things, monkeypatch):
    """Redrive writes the table's item under the letter's (old) sequence and keeps when it read
    it: a late duplicate of a record made between the letter and that read, newer by sequence
    than the letter, must not replace what the table holds (the handler reads it again)."""
    older = put("a", 1, v="two")
    between = put("a", 2, v="two and a half")
    boto3.client("dynamodb").put_item(TableName="Things", Item={"pk": {"S": "a"}, "v": {"S": "three"}})
    monkeypatch.setenv("TARGETS_TTL_SECONDS", "0.5")
    assert cli.main(["--full", "--no-progress"]) == 0
    send(sync.queue_url, letter(older))
    assert redrive() == 0
    sync.configure()  # a new container: it sees the rebuilt index
    assert sync.deliver(between) == {"batchItemFailures": []}
    assert sync.docs() == {"a": {"pk": "a", "v": "three"}}
