"""Local sync against real streams (moto) and the real handler and Elasticsearch.

The failure tests wrap the project's handler in ``flaky_handler.Flaky``, which fails chosen
sequence numbers a chosen number of times, and check what reached the function, in which order,
what was acknowledged, what the on-failure queue received, and that the index ends equal to
the table. One test feeds a scripted multi-shard stream (moto has one shard that never closes)
to check shard lineage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest
from flaky_handler import Call, Flaky

from indexer.cliutil import EXIT_CLUSTER, EXIT_USAGE
from indexer.localsync import sync as localsync
from indexer.sampleapp import s3assets
from indexer.__main__ import main
from indexer.localsync.checkpoints import LATEST, Checkpoints
from indexer.localsync.esm import MappingConfig
from indexer.records import RESERVED_FIELD
from indexer.localsync.streamreader import aws_client, open_stream

ROOT = Path(__file__).resolve().parents[1]


# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def table(sync: Any) -> str:
    name = f"Things-{uuid.uuid4().hex[:8]}"
    boto3.client("dynamodb").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return name


def write(table: str, *changes: tuple[str, int | None]) -> None:
    """(key, version) writes the item with that version; (key, None) deletes it."""
    dynamodb = boto3.client("dynamodb")
    for key, version in changes:
        if version is None:
            dynamodb.delete_item(TableName=table, Key={"pk": {"S": key}})
        else:
            dynamodb.put_item(TableName=table, Item={"pk": {"S": key}, "v": {"N": str(version)}})


#: 10 stream records over 5 items: inserts, updates, deletes, a re-insert; "e" is written once.
HISTORY = [("a", 1), ("b", 1), ("c", 1), ("a", 2), ("b", None), ("e", 1), ("c", 2), ("b", 2), ("a", 3), ("c", None)]


def stream(table: str) -> list[tuple[str, str]]:
    """Every record in the table's stream as (item key, sequence number), read directly."""
    arn = boto3.client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
    streams = boto3.client("dynamodbstreams")
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    records = streams.get_records(ShardIterator=iterator)["Records"]
    return [(r["dynamodb"]["Keys"]["pk"]["S"], r["dynamodb"]["SequenceNumber"]) for r in records]


def table_items(table: str) -> dict[str, dict[str, Any]]:
    items = boto3.client("dynamodb").scan(TableName=table, ConsistentRead=True)["Items"]
    return {item["pk"]["S"]: {"pk": item["pk"]["S"], "v": int(item["v"]["N"])} for item in items}


def run_sync(table: str, handler: Any, state: Path, stop: threading.Event | None = None, **mapping: Any) -> Any:
    options = localsync.SyncOptions(
        table=table, handler=handler, state=state, once=True, poll_interval=0.01, mapping=MappingConfig(**mapping),
        on_failure=mapping_queue.get(table),
    )
    return localsync.run(options, stop)


#: table -> on-failure queue URL, for run_sync
mapping_queue: dict[str, str] = {}


def on_failure_queue(table: str) -> str:
    url = boto3.client("sqs").create_queue(QueueName=f"on-failure-{table}")["QueueUrl"]
    mapping_queue[table] = url
    return url


def on_failure_messages(url: str) -> list[dict[str, Any]]:
    got = boto3.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    return [json.loads(m["Body"]) for m in got.get("Messages", [])]


def assert_delivered_once_in_order(calls: list[Call], records: list[tuple[str, str]], discarded: tuple[str, ...] = ()) -> None:
    """Each invocation is in sequence order and starts at the first record not yet acknowledged
    (or discarded); everything acknowledged, taken together, is the stream: once, in order."""
    everything = [sequence for _, sequence in records]
    done: list[str] = []

    def skip_discarded(unless: str | None) -> None:
        while len(done) < len(everything) and everything[len(done)] in discarded and everything[len(done)] != unless:
            done.append(everything[len(done)])

    for call in calls:
        assert call.sequences == sorted(call.sequences, key=int)
        skip_discarded(unless=call.sequences[0])
        assert call.sequences[0] == everything[len(done)], f"resumed at the wrong record: {call.sequences}"
        done.extend(call.acknowledged)
    skip_discarded(unless=None)
    assert done == everything
    item_of = {sequence: key for key, sequence in records}
    per_item: dict[str, list[str]] = {}
    for sequence in done:
        per_item.setdefault(item_of[sequence], []).append(sequence)
    for key, sequences in per_item.items():
        assert sequences == [s for k, s in records if k == key]


def assert_index_equals_table(sync: Any, table: str, except_keys: set[str] = frozenset()) -> None:
    expected = {k: v for k, v in table_items(table).items() if k not in except_keys}
    docs = {k: v for k, v in sync.docs().items() if k not in except_keys}
    assert docs == expected


# -- behaviour with the real handler -----------------------------------------------------------


@pytest.mark.es
def test_every_change_reaches_the_index_once_and_in_order(sync, table, tmp_path):
    write(table, *HISTORY)
    handler = Flaky()
    totals = run_sync(table, handler, tmp_path / "state.json", batch_size=4)
    assert [len(c.records) for c in handler.calls] == [4, 4, 2]
    assert_delivered_once_in_order(handler.calls, stream(table))
    assert_index_equals_table(sync, table)
    assert totals.acknowledged == 10 and totals.function_errors == 0


@pytest.mark.es
def test_records_reach_the_handler_shaped_as_lambda_delivers_them(sync, table, tmp_path):
    write(table, ("a", 1))
    seen: list[dict[str, Any]] = []
    contexts: list[Any] = []

    def capture(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.extend(event["Records"])
        contexts.append(context)
        return {"batchItemFailures": []}

    run_sync(table, capture, tmp_path / "state.json")
    (record,) = seen
    arn = boto3.client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
    assert record["eventSourceARN"] == arn and record["eventSource"] == "aws:dynamodb"
    assert record["awsRegion"] == "us-east-1" and record["eventName"] == "INSERT"
    assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], int)
    assert record["dynamodb"]["NewImage"] == {"pk": {"S": "a"}, "v": {"N": "1"}}
    assert 50_000 < contexts[0].get_remaining_time_in_millis() <= 60_000
    assert contexts[0].invoked_function_arn == "arn:aws:lambda:us-east-1:123456789012:function:local-sync"


@pytest.mark.es
def test_partial_batch_responses_resume_from_the_lowest_failed_record(sync, table, tmp_path):
    write(table, *HISTORY)
    records = stream(table)
    r = [sequence for _, sequence in records]
    handler = Flaky(fail={r[2]: 2, r[6]: 1}, mode="report")
    totals = run_sync(table, handler, tmp_path / "state.json", batch_size=5)
    assert [c.sequences for c in handler.calls] == [r[0:5], r[2:5], r[2:5], r[5:10], r[6:10]]
    assert_delivered_once_in_order(handler.calls, records)
    assert_index_equals_table(sync, table)
    assert totals.partial_failures == 3 and totals.discarded == 0


@pytest.mark.es
def test_bisect_isolates_the_failing_record_and_reports_it_to_the_on_failure_queue(sync, table, tmp_path):
    queue = on_failure_queue(table)
    write(table, *HISTORY)
    records = stream(table)
    r = [sequence for _, sequence in records]
    bad = r[5]  # item "e", written once
    handler = Flaky(fail={bad: 100})
    totals = run_sync(table, handler, tmp_path / "state.json", batch_size=8,
                      bisect_batch_on_function_error=True, maximum_retry_attempts=1)
    assert [c.sequences for c in handler.calls] == [
        r[0:8], r[0:4], r[4:8], r[4:6], r[4:5], r[5:6], r[5:6], r[6:8], r[8:10],
    ]
    assert_delivered_once_in_order(handler.calls, records, discarded=(bad,))
    (message,) = on_failure_messages(queue)
    arn = boto3.client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
    info = message["DDBStreamBatchInfo"]
    assert (info["shardId"], info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"],
            info["streamArn"]) == (stream_shard(arn), bad, bad, 1, arn)
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["requestContext"]["approximateInvokeCount"] == 5
    assert message["responseContext"]["functionError"] == "Unhandled"
    assert_index_equals_table(sync, table, except_keys={"e"})
    assert "e" not in sync.docs() and totals.bisections == 3 and totals.discarded == 1


def stream_shard(arn: str) -> str:
    return boto3.client("dynamodbstreams").describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]


@pytest.mark.es
def test_batches_are_retried_up_to_the_maximum_then_reported_and_skipped(sync, table, tmp_path):
    queue = on_failure_queue(table)
    write(table, *HISTORY[:8])
    records = stream(table)
    r = [sequence for _, sequence in records]
    # r[1] fails twice: the third try, the last allowed, succeeds. r[5] fails three times: discarded.
    handler = Flaky(fail={r[1]: 2, r[5]: 3})
    totals = run_sync(table, handler, tmp_path / "state.json", batch_size=4, maximum_retry_attempts=2)
    assert [c.sequences for c in handler.calls] == [r[0:4]] * 3 + [r[4:8]] * 3
    (message,) = on_failure_messages(queue)
    info = message["DDBStreamBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == (r[4], r[7], 4)
    assert message["requestContext"]["approximateInvokeCount"] == 3
    assert totals.acknowledged == 4 and totals.discarded == 4
    state = json.loads((tmp_path / "state.json").read_text())
    (shard,) = next(iter(state["streams"].values()))["shards"].values()
    assert shard["checkpoint"] == r[7]  # past the discarded batch: the shard goes on


@pytest.mark.es
def test_a_restart_resumes_after_the_checkpoint(sync, table, tmp_path):
    write(table, *HISTORY[:6])
    stop = threading.Event()
    first = Flaky(after=lambda calls: stop.set() if len(calls) == 2 else None)
    run_sync(table, first, tmp_path / "state.json", stop=stop, batch_size=2)
    assert len(first.calls) == 2  # stopped after the second batch, its checkpoint saved
    write(table, *HISTORY[6:])
    second = Flaky()
    run_sync(table, second, tmp_path / "state.json", batch_size=2)
    records = stream(table)
    assert second.calls[0].sequences[0] == records[4][1]
    assert_delivered_once_in_order(first.calls + second.calls, records)
    assert_index_equals_table(sync, table)


class Crash(BaseException):
    """The process dying mid-invocation (not an error Lambda would see)."""


@pytest.mark.es
def test_a_crash_mid_batch_redelivers_that_batch_and_nothing_before_it(sync, table, tmp_path):
    write(table, *HISTORY)

    def crash(calls: list[Call]) -> None:
        if len(calls) == 2:
            raise Crash

    first = Flaky(after=crash)
    with pytest.raises(Crash):
        run_sync(table, first, tmp_path / "state.json", batch_size=3)
    second = Flaky()
    run_sync(table, second, tmp_path / "state.json", batch_size=3)
    records = stream(table)
    assert second.calls[0].sequences == first.calls[1].sequences  # at least once: redelivered
    assert_delivered_once_in_order(first.calls[:1] + second.calls, records)
    assert_index_equals_table(sync, table)


@pytest.mark.es
def test_latest_starts_after_what_the_stream_already_holds(sync, table, tmp_path):
    write(table, ("a", 1), ("b", 1))
    handler = Flaky()
    options = localsync.SyncOptions(table=table, handler=handler, starting_position=LATEST, once=True,
                                    poll_interval=0.01)
    stream_arn, _ = open_stream(aws_client("dynamodb"), table)
    checkpoints = Checkpoints(tmp_path / "state.json").open()
    try:
        runner = localsync.LocalSync(options, aws_client("dynamodbstreams"), stream_arn, handler, checkpoints)
        runner.refresh()  # takes the shard iterators: LATEST is now
        write(table, ("a", 2), ("c", 1))
        runner.run()
    finally:
        checkpoints.close()
    assert [key for call in handler.calls for key, _ in call.records] == ["a", "c"]
    assert sync.docs() == {"a": {"pk": "a", "v": 2}, "c": {"pk": "c", "v": 1}}


# -- shard lineage, with a scripted stream -----------------------------------------------------


class ScriptedStreams:
    """A stream whose shards close and split, which moto's never do: parent ``p`` (closed),
    children ``c1`` and ``c2`` (open). Iterators are "shard:position" strings."""

    def __init__(self) -> None:
        self.shards = {
            "p": {"ShardId": "p", "SequenceNumberRange": {"StartingSequenceNumber": "100", "EndingSequenceNumber": "199"}},
            "c2": {"ShardId": "c2", "ParentShardId": "p", "SequenceNumberRange": {"StartingSequenceNumber": "300"}},
            "c1": {"ShardId": "c1", "ParentShardId": "p", "SequenceNumberRange": {"StartingSequenceNumber": "200"}},
        }
        self.records: dict[str, list[dict[str, Any]]] = {"p": [], "c1": [], "c2": []}

    def add(self, shard: str, sequence: int, key: str) -> None:
        self.records[shard].append({
            "eventName": "MODIFY", "eventID": str(sequence),
            "dynamodb": {"Keys": {"pk": {"S": key}}, "SequenceNumber": str(sequence),
                         "ApproximateCreationDateTime": datetime.now(timezone.utc)},
        })

    def describe_stream(self, **kwargs: Any) -> dict[str, Any]:
        return {"StreamDescription": {"Shards": list(self.shards.values())}}

    def get_shard_iterator(self, ShardId: str, ShardIteratorType: str, SequenceNumber: str = "", **_: Any) -> dict[str, Any]:
        sequences = [int(r["dynamodb"]["SequenceNumber"]) for r in self.records[ShardId]]
        if ShardIteratorType == "AFTER_SEQUENCE_NUMBER":
            position = sum(1 for s in sequences if s <= int(SequenceNumber))
        else:
            position = len(sequences) if ShardIteratorType == "LATEST" else 0
        return {"ShardIterator": f"{ShardId}:{position}"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        shard, position = ShardIterator.split(":")
        records = self.records[shard][int(position) : int(position) + Limit]
        end = int(position) + len(records)
        closed = "EndingSequenceNumber" in self.shards[shard]["SequenceNumberRange"]
        following = None if closed and end == len(self.records[shard]) else f"{shard}:{end}"
        return {"Records": records, "NextShardIterator": following}


def test_children_are_read_after_their_closed_parent_and_a_restart_skips_the_parent(tmp_path):
    scripted = ScriptedStreams()
    for shard, sequence, key in [("p", 101, "a"), ("p", 102, "b"), ("c1", 201, "a"), ("c2", 301, "b"), ("c1", 202, "a")]:
        scripted.add(shard, sequence, key)
    delivered: list[str] = []

    def record(event: dict[str, Any], context: Any) -> None:
        delivered.extend(r["dynamodb"]["SequenceNumber"] for r in event["Records"])

    arn = "arn:aws:dynamodb:eu-west-1:111122223333:table/T/stream/2026-11-27T00:00:00.000"

    def run_once() -> None:
        checkpoints = Checkpoints(tmp_path / "state.json").open()
        try:
            sync = localsync.LocalSync(localsync.SyncOptions(table="T", once=True, poll_interval=0.01),
                                       scripted, arn, record, checkpoints)
            sync.refresh()
            sync.run()
        finally:
            checkpoints.close()

    run_once()
    assert delivered == ["101", "102", "201", "202", "301"]
    scripted.add("c2", 302, "b")
    run_once()
    assert delivered[5:] == ["302"]
    state = json.loads((tmp_path / "state.json").read_text())["streams"][arn]["shards"]
    assert state["p"]["finished"] and state["c1"]["checkpoint"] == "202" and state["c2"]["checkpoint"] == "302"


# -- the command line --------------------------------------------------------------------------


def test_a_missing_table_is_one_line_and_exit_2(aws, capsys, tmp_path):
    assert main(["sync", "--table", "Nope", "--handler", "flaky_handler:Flaky", "--state", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "table 'Nope' does not exist" in err


def test_a_table_without_a_stream_is_one_line_and_exit_2(aws, capsys, tmp_path):
    boto3.client("dynamodb").create_table(
        TableName="Plain", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
    )
    assert main(["sync", "--table", "Plain", "--handler", "flaky_handler:Flaky", "--state", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no stream" in err


def test_an_unreachable_endpoint_is_one_line_and_exit_2(tmp_path):
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run(
        [sys.executable, "-m", "indexer", "sync", "--table", "T", "--handler", "json:dumps", "--state", str(tmp_path / "s")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "cannot reach DynamoDB at http://127.0.0.1:9" in done.stderr


@pytest.mark.parametrize("argv, says", [
    (["sync", "--table", "T", "--batch-size", "10001"], "--batch-size must be between 1 and 10000"),
    (["sync", "--table", "T", "--maximum-record-age", "30"], "--maximum-record-age must be -1"),
    (["sync", "--table", "T", "--handler", "nonsense"], "--handler must look like module:function"),
    (["sync", "--table", "T", "--starting-position", "AT_TIMESTAMP"], "--starting-position"),
    ([], "a command is required"),
])
def test_bad_flags_are_one_line_and_exit_2(argv, says, capsys, tmp_path):
    try:
        code = main([*argv, "--state", str(tmp_path / "s")] if argv else argv)
    except SystemExit as exit:
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and says in err


@pytest.mark.parametrize("env, says, code", [
    ({"DLQ_URL": None}, "DLQ_URL is required", EXIT_USAGE),
    ({"DLQ_URL": "http://127.0.0.1:9/1/q", "ELASTICSEARCH_URL": "http://127.0.0.1:9"},
     "cannot reach the search cluster at http://127.0.0.1:9 (ELASTICSEARCH_URL)", EXIT_CLUSTER),
])
def test_the_handlers_settings_are_checked_before_anything_is_read(env, says, code, monkeypatch, capsys, tmp_path):
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert main(["sync", "--table", "T", "--state", str(tmp_path / "s")]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err


def test_a_state_file_in_use_by_another_sync_is_refused(aws, plain_stream_table, capsys, tmp_path):
    held = Checkpoints(tmp_path / "state.json").open()
    try:
        assert main(["sync", "--table", plain_stream_table, "--handler", "flaky_handler:Flaky", "--state",
                     str(tmp_path / "state.json"), "--once"]) == 2
    finally:
        held.close()
    assert "in use by another local sync" in capsys.readouterr().err


def test_a_state_file_that_is_not_ours_is_refused_and_left_alone(plain_stream_table, capsys, tmp_path):
    state = tmp_path / "state.json"
    state.write_text('{"something": "else"}')
    assert main(["sync", "--table", plain_stream_table, "--handler", "flaky_handler:Flaky", "--state", str(state)]) == 2
    assert "is not a local sync state file" in capsys.readouterr().err
    assert state.read_text() == '{"something": "else"}'


def test_the_state_file_is_replaced_whole(plain_stream_table, tmp_path):
    boto3.client("dynamodb").put_item(TableName=plain_stream_table, Item={"pk": {"S": "a"}})
    options = localsync.SyncOptions(table=plain_stream_table, handler=lambda event, context: None,
                                    state=tmp_path / "state.json", once=True, poll_interval=0.01)
    localsync.run(options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "state.json.lock"]  # no temporary left
    (stream,) = json.loads((tmp_path / "state.json").read_text())["streams"].values()
    (shard,) = stream["shards"].values()
    assert shard["checkpoint"] == stream_record_sequences(plain_stream_table)[-1]


def stream_record_sequences(table: str) -> list[str]:
    return [sequence for _, sequence in stream(table)]


@pytest.fixture
def plain_stream_table(aws: None) -> str:
    """A table with a stream, in-process moto, no Elasticsearch (for handlers that need none)."""
    boto3.client("dynamodb").create_table(
        TableName="Cli", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return "Cli"


def test_stopping_also_ends_a_batch_that_is_being_retried_forever(plain_stream_table, tmp_path):
    """A stop (a signal, or --stop-after's timer) arriving while a failing batch waits to be
    retried ends the run there: the retry wait is cut short, nothing is acknowledged."""
    boto3.client("dynamodb").put_item(TableName=plain_stream_table, Item={"pk": {"S": "a"}})
    stop = threading.Event()
    calls: list[int] = []

    def broken(event: dict[str, Any], context: Any) -> None:
        calls.append(len(event["Records"]))
        if len(calls) == 2:
            stop.set()  # as the timer or SIGTERM would, between this failure and the next retry
        raise RuntimeError("always")

    options = localsync.SyncOptions(table=plain_stream_table, handler=broken, state=tmp_path / "state.json",
                                    poll_interval=0.01)
    totals = localsync.run(options, stop)
    assert calls == [1, 1] and totals.function_errors == 2 and totals.acknowledged == 0
    state = json.loads((tmp_path / "state.json").read_text())
    assert [shard["checkpoint"] for stream in state["streams"].values() for shard in stream["shards"].values()] == [None]


def test_stop_after_stops_the_run(plain_stream_table, tmp_path):
    stop = threading.Event()
    options = localsync.SyncOptions(table=plain_stream_table, handler=lambda event, context: None,
                                    state=tmp_path / "state.json", poll_interval=0.01, stop_after=0.1)
    totals = localsync.run(options, stop)  # an idle stream: only the timer can end this run
    assert stop.is_set() and totals.invocations == 0


class _ReadSignal:
    """The real Streams client, with an event set once a GetRecords call has returned a record."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.read_a_record = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def get_records(self, **kwargs: Any) -> dict[str, Any]:
        got = self._client.get_records(**kwargs)
        if got.get("Records"):
            self.read_a_record.set()
        return got


def test_a_batching_window_waits_for_a_full_batch(plain_stream_table, tmp_path, monkeypatch):
    dynamodb = boto3.client("dynamodb")
    dynamodb.put_item(TableName=plain_stream_table, Item={"pk": {"S": "a"}})
    real_client = localsync.aws_client
    readers: list[_ReadSignal] = []

    def signalling_client(service: str) -> Any:
        client = real_client(service)
        if service != "dynamodbstreams":
            return client
        readers.append(_ReadSignal(client))
        return readers[-1]

    monkeypatch.setattr(localsync, "aws_client", signalling_client)
    batches: list[int] = []
    stop = threading.Event()

    def count(event: dict[str, Any], context: Any) -> None:
        batches.append(len(event["Records"]))
        stop.set()

    # The longest window Lambda allows: it cannot close by itself while this test runs.
    options = localsync.SyncOptions(table=plain_stream_table, handler=count, state=tmp_path / "state.json",
                                    poll_interval=0.01,
                                    mapping=MappingConfig(batch_size=3, maximum_batching_window=300))
    runner = threading.Thread(target=localsync.run, args=(options, stop))
    runner.start()
    # The waits below are bounded only so that a broken sync fails instead of hanging.
    try:
        wait_for(lambda: readers and readers[0].read_a_record.is_set())
        assert batches == []  # one record read: the window is still open
        dynamodb.put_item(TableName=plain_stream_table, Item={"pk": {"S": "b"}})
        dynamodb.put_item(TableName=plain_stream_table, Item={"pk": {"S": "c"}})
        assert stop.wait(120)  # set by the handler once it is invoked with the full batch
    finally:
        stop.set()
        runner.join(120)
    assert batches == [3]  # invoked as soon as the batch was full, long before the window closed


# -- end to end: moto server, the CLI as a process, the real handler ---------------------------


def wait_for(condition: Any, timeout: float = 120.0) -> float:
    """Poll ``condition`` until it holds; ``timeout`` only bounds a run that would hang (it is
    no speed requirement: generous for a loaded machine)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not reached within {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.mark.es
def test_an_s3_upload_becomes_searchable_and_its_deletion_disappears(aws_server, es_client, es_url, tmp_path, monkeypatch):
    alias = f"assets-{uuid.uuid4().hex[:8]}"
    s3, dynamodb = boto3.client("s3"), boto3.client("dynamodb")
    s3.create_bucket(Bucket="images-in")
    dynamodb.create_table(
        TableName="Assets", KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    dlq = boto3.client("sqs").create_queue(QueueName="dlq")["QueueUrl"]
    monkeypatch.setenv("TABLE_NAME", "Assets")
    env = {**os.environ, "ELASTICSEARCH_URL": es_url, "INDEX_NAME": alias, "DLQ_URL": dlq, "LOG_LEVEL": "INFO"}
    log = tmp_path / "sync.log"
    with open(log, "w", encoding="utf-8") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "indexer", "sync", "--state", str(tmp_path / "state.json"), "--poll-interval", "0.1"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
        )
    s3assets.reset()

    def searchable() -> dict[str, Any]:
        if not es_client.indices.exists_alias(name=alias):
            return {}
        es_client.indices.refresh(index=alias)
        return {h["_id"]: h["_source"] for h in es_client.search(index=alias, size=10)["hits"]["hits"]}

    try:
        key = "cats/tom & jerry.jpg"
        s3.put_object(Bucket="images-in", Key=key, Body=b"x" * 42, ContentType="image/jpeg", Metadata={"owner": "ann"})
        head = s3.head_object(Bucket="images-in", Key=key)
        assert s3assets.created(s3assets.object_event(
            "ObjectCreated:Put", "images-in", key, sequencer="0A1", size=42, etag=head["ETag"].strip('"'),
        )) == {"written": 1, "deleted": 0, "skipped": 0}
        wait_for(lambda: key in searchable())
        doc = searchable()[key]
        assert {k: doc[k] for k in ("key", "bucket", "size", "content_type", "metadata")} == {
            "key": key, "bucket": "images-in", "size": 42, "content_type": "image/jpeg", "metadata": {"owner": "ann"},
        }
        assert RESERVED_FIELD in doc  # written by the real handler

        s3.delete_object(Bucket="images-in", Key=key)
        s3assets.deleted(s3assets.object_event("ObjectRemoved:Delete", "images-in", key, sequencer="0A2"))
        wait_for(lambda: key not in searchable())
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        s3assets.reset()
        es_client.indices.delete(index=f"{alias}-*", ignore_unavailable=True, allow_no_indices=True)
    output = log.read_text(encoding="utf-8")
    assert process.returncode == 0, output[-3000:]
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines if "_aws" not in line]
    assert events[0] in ("shard_started", "local_sync_started") and events[-1] == "local_sync_stopped"
    assert "batch_done" in events  # the project's handler ran
    # Beside each batch_done log line, the handler's metrics (an EMF line) on the same stdout.
    assert len([line for line in lines if "_aws" in line]) == events.count("batch_done")


@pytest.mark.es
def test_the_handlers_metrics_are_summed_on_the_terminal(sync, table, tmp_path, capsys):
    write(table, *HISTORY)
    options = localsync.SyncOptions(table=table, handler=Flaky(), state=tmp_path / "state.json", once=True,
                                    poll_interval=0.01, mapping=MappingConfig(batch_size=4), metrics_every=3600)
    localsync.run(options)
    # One window longer than the run: the last line, written on the way out, covers all three batches.
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("metrics, last")]
    assert "10 records" in line and "in 3 invocations" in line and "0 dead-lettered, 0 failed" in line
    # Batch 2 re-inserts b over its own document: the warm container's cache of what it wrote
    # knows that revision, so no blind create conflicts and no second bulk is needed.
    assert "replication lag max" in line and "bulk 3 requests" in line and "version conflicts 0" in line
    from indexer import handler as project

    assert project.listeners == []  # removed when the sync ends
