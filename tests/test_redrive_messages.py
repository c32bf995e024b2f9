"""Redrive's pure parts: message kinds, re-sent bodies, the summary, the preview's decisions,
and reading a stream range (over a scripted client: the point is where it stops)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest
from botocore.exceptions import ClientError

from stream_events import SEQUENCE_BASE, put, remove
from indexer import deadletter
from indexer.actions import Current
from indexer.errors import RecordError
from indexer.records import change_of
from replay.redrive import messages
from replay.redrive.messages import DeadLetter, StreamRange, Unreadable
from replay.redrive.readback import RangeGone, Readback, ReadbackFailed
from replay.redrive.apply import APPLIED, DEAD, STALE, SUPERSEDED, Unit, preview_units
from replay.redrive.report import Outcome, Report, Summary, text

NOW = datetime(2026, 11, 27, 0, 38, 6, 21000, tzinfo=timezone.utc)
STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/mytable/stream/2026-11-27T00:04:06.388"
SHARD = "shardId-00000001573689847184-864758bb"
ON_FAILURE = {
    "requestContext": {"requestId": "316aa6d0-8154-xmpl-9af7-85d5f4a6bc81",
                       "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:indexer",
                       "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 3},
    "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
    "version": "1.0", "timestamp": "2026-11-27T00:38:06.021Z",
    "DDBStreamBatchInfo": {"shardId": SHARD, "startSequenceNumber": "800000000003126276362",
                           "endSequenceNumber": "800000000003126276362",
                           "approximateArrivalOfFirstRecord": "2026-11-27T00:38:04Z",
                           "approximateArrivalOfLastRecord": "2026-11-27T00:38:05Z",
                           "batchSize": 1, "streamArn": STREAM_ARN},
}


def handler_message(record: Any, attempts: int = 1, **extra: Any) -> str:
    letter = deadletter.Letter(record, RecordError("document_parsing_exception", "no"), attempts, doc_id="a", alias="things")
    return deadletter.encoded({**deadletter.message(letter, NOW), **extra})


# -- kinds ---------------------------------------------------------------------------------


def test_the_handlers_message_is_a_dead_letter_with_its_record_and_attempts():
    found = messages.parse(handler_message(put("a", 1, v=1), attempts=3))
    assert isinstance(found, DeadLetter)
    assert found.record == put("a", 1, v=1) and found.attempts == 3 and found.alias == "things"
    assert not found.images_omitted and not found.needs_item


def test_a_dead_letter_without_images_needs_the_item_only_when_it_is_an_upsert():
    upsert = put("a", 1, v=1)
    del upsert["dynamodb"]["NewImage"]
    assert messages.parse(handler_message(upsert, images_omitted=True)).needs_item
    assert not messages.parse(handler_message(remove("a", 2), images_omitted=True)).needs_item


def test_odd_attempts_and_aliases_in_a_dead_letter_fall_back_to_safe_values():
    body = json.loads(handler_message(put("a", 1)))
    found = messages.parse(json.dumps({**body, "attempts": "many", "index": "Not An Alias"}))
    assert isinstance(found, DeadLetter) and found.attempts == 1 and found.alias is None


def test_a_truncated_dead_letter_is_known_but_has_no_record():
    body = json.loads(handler_message(put("a", 1)))
    found = messages.parse(json.dumps({**body, "record": None, "record_text": "{...", "record_truncated": True}))
    assert isinstance(found, DeadLetter) and found.record is None


@pytest.mark.parametrize("change, reason", [
    ({"version": 2}, "newer than this redrive understands"),
    ({"record": "drop"}, "without a record"),
])
def test_dead_letters_this_redrive_cannot_read_are_unreadable(change, reason):
    body = {**json.loads(handler_message(put("a", 1))), **change}
    if change.get("record") == "drop":
        del body["record"]
    found = messages.parse(json.dumps(body))
    assert isinstance(found, Unreadable) and reason in found.reason


def test_the_on_failure_destination_message_is_a_stream_range():
    found = messages.parse(json.dumps(ON_FAILURE))
    assert found == StreamRange(ON_FAILURE, STREAM_ARN, SHARD, "800000000003126276362", "800000000003126276362",
                                1, "RetryAttemptsExhausted")
    assert found.table == "mytable" and found.attempts == 1
    assert SHARD in found.describe() and "800000000003126276362..800000000003126276362" in found.describe()


def test_an_on_failure_message_delivered_through_sns_is_unwrapped():
    envelope = {"Type": "Notification", "MessageId": "x", "Message": json.dumps(ON_FAILURE)}
    assert isinstance(messages.parse(json.dumps(envelope)), StreamRange)


@pytest.mark.parametrize("info, reason", [
    ({"shardId": "short"}, "not a shard id"),
    ({"streamArn": "arn:aws:dynamodb:us-east-1:1:table/t"}, "not a DynamoDB stream ARN"),
    ({"startSequenceNumber": "900000000003126276362"}, "is after endSequenceNumber"),
    ({"endSequenceNumber": "12ab"}, "not 1 to 40 digits"),
])
def test_an_on_failure_message_with_bad_fields_is_unreadable(info, reason):
    body = {**ON_FAILURE, "DDBStreamBatchInfo": {**ON_FAILURE["DDBStreamBatchInfo"], **info}}
    found = messages.parse(json.dumps(body))
    assert isinstance(found, Unreadable) and reason in found.reason


@pytest.mark.parametrize("body, reason", [
    ("hello\nworld", "not JSON"),
    ("[1, 2]", "a JSON list"),
    (json.dumps({"KinesisBatchInfo": {}}), "Kinesis"),
    (json.dumps({"eventName": "INSERT"}), "keys: eventName"),
    (json.dumps({"Type": "Notification", "Message": "nope"}), "SNS notification: not JSON"),
])
def test_anything_else_is_unreadable_with_a_reason_and_its_first_bytes(body, reason):
    found = messages.parse(body)
    assert isinstance(found, Unreadable) and reason in found.reason
    assert "\n" not in found.describe() and found.preview.startswith('"')


def test_the_preview_of_a_long_message_is_cut_and_says_so():
    assert messages.preview("x" * 500) == '"' + "x" * 80 + '" ...'


# -- what is sent back -----------------------------------------------------------------------


def test_a_message_failing_again_keeps_its_record_with_one_attempt_more_and_the_new_reason():
    upsert = put("a", 1, v=1)
    del upsert["dynamodb"]["NewImage"]
    found = messages.parse(handler_message(upsert, attempts=2, images_omitted=True))
    later = datetime(2026, 11, 28, tzinfo=timezone.utc)
    body = messages.retried_body(found, RecordError("strict_dynamic_mapping_exception", "field [v]"), later, "a", "things")
    assert body["attempts"] == 3 and body["record"] == upsert and body["images_omitted"] is True
    assert body["error"] == {"class": "strict_dynamic_mapping_exception", "message": "field [v]"}
    assert body["failed_at"] == "2026-11-28T00:00:00.000Z" and body["doc_id"] == "a" and body["index"] == "things"
    again = messages.parse(deadletter.encoded(body))
    assert isinstance(again, DeadLetter) and again.attempts == 3


def test_a_range_record_failing_again_becomes_a_dead_letter_with_its_payload_at_attempt_two():
    body = messages.range_letter(put("a", 7, v=1), RecordError("document_parsing_exception", "no"), NOW, "a", "t")
    assert body["type"] == deadletter.MESSAGE_TYPE and body["attempts"] == 2
    assert body["record"] == put("a", 7, v=1) and body["sequence_number"] == str(SEQUENCE_BASE + 7)


def test_the_default_parking_queue_is_the_dead_letter_queue_with_a_suffix_fifo_included():
    assert messages.parking_url("https://sqs.us-east-1.amazonaws.com/1/dlq") == "https://sqs.us-east-1.amazonaws.com/1/dlq-parking"
    assert messages.parking_url("https://sqs.us-east-1.amazonaws.com/1/dlq.fifo") == (
        "https://sqs.us-east-1.amazonaws.com/1/dlq-parking.fifo")


# -- summary ---------------------------------------------------------------------------------


def _report(outcome: Outcome, **extra: Any) -> Report:
    return Report("id-1", "dead-letter", outcome, "MODIFY", **extra)


def test_the_exit_code_is_0_only_when_everything_was_redriven_or_stale():
    assert Summary("q").exit_code() == 0
    assert Summary("q", reports=[_report(Outcome.REDRIVEN), _report(Outcome.STALE)]).exit_code() == 0
    for problem in (Outcome.FAILED_AGAIN, Outcome.PARKED, Outcome.UNREADABLE, Outcome.GONE, Outcome.UNRESOLVED):
        assert Summary("q", reports=[_report(Outcome.REDRIVEN), _report(problem)]).exit_code() == 1
    assert Summary("q", reports=[_report(Outcome.REDRIVEN)], stopped="cluster down").exit_code() == 1


def test_the_summary_counts_each_outcome_and_lists_the_problems():
    summary = Summary("https://q", reports=[_report(Outcome.REDRIVEN, indexed=2, deleted=1),
                                            _report(Outcome.GONE, detail="shard s")])
    shown = text(summary)
    assert "redrive from https://q: 2 messages" in shown
    assert "(2 records indexed, 1 deleted)" in shown
    assert "gone             id-1  dead-letter: MODIFY (shard s)" in shown
    assert "python -m replay --full" in shown
    assert summary.counts() == {"messages": 2, "redriven": 1, "stale": 0, "failed_again": 0, "parked": 0,
                                "unreadable": 0, "refused": 0, "gone": 1, "unresolved": 0, "records_indexed": 2,
                                "records_deleted": 1, "unparked": 0}


def test_a_dry_run_summary_speaks_in_the_conditional():
    shown = text(Summary("q", dry_run=True, reports=[_report(Outcome.REDRIVEN), _report(Outcome.PARKED)]))
    assert "nothing changed" in shown and "would apply" in shown and "would park" in shown


# -- the preview decides like the guard, from reads only ------------------------------------------


class ReadOnlyStore:
    """Answers the two reads a preview makes; has no write methods at all."""

    def __init__(self, aliases: dict[str, list[str]], held: dict[tuple[str, str], Current | None]) -> None:
        self._aliases, self._held = aliases, held

    def aliases(self, names, timeout):
        return {index: [a for a in found if a in names] for index, found in self._aliases.items()}

    def current(self, pairs, timeout):
        return {pair: self._held.get(pair) for pair in pairs}


def _units(*records: Any) -> list[Unit]:
    units = []
    for position, stream_record in enumerate(records):
        try:
            units.append(Unit(position, stream_record, change=change_of(stream_record, position, "things")))
        except RecordError as error:
            units.append(Unit(position, stream_record, error=error))
    return units


def test_the_preview_marks_stale_superseded_refused_and_to_apply_without_writing():
    store = ReadOnlyStore({"things-initial": ["things"]}, {("things-initial", "b"): Current(SEQUENCE_BASE + 9, 4, 1)})
    bad = put("c", 3)
    bad["eventName"] = "UPSERT"
    units = _units(put("a", 1), put("a", 2), put("b", 5), bad)
    preview_units(units, store, 10)
    assert [u.outcome for u in units] == [SUPERSEDED, APPLIED, STALE, DEAD]


def test_the_preview_of_a_rebuild_in_progress_needs_both_indices_to_hold_newer():
    store = ReadOnlyStore({"things-1": ["things"], "things-2": ["things-rebuild"]},
                          {("things-1", "a"): Current(SEQUENCE_BASE + 9, 1, 1)})
    units = _units(put("a", 5))
    preview_units(units, store, 10)
    assert units[0].outcome == APPLIED  # the index being built does not have it yet


def test_the_preview_of_an_alias_that_does_not_exist_yet_would_apply():
    units = _units(remove("a", 5))
    preview_units(units, ReadOnlyStore({}, {}), 10)
    assert units[0].outcome == APPLIED


# -- reading a range back --------------------------------------------------------------------


class ScriptedStreams:
    """A DynamoDB Streams client that serves pages from a script."""

    def __init__(self, pages: list[list[int]] | Exception, close: bool = False) -> None:
        self.pages, self.close, self.calls = pages, close, 0

    def get_shard_iterator(self, **request):
        if isinstance(self.pages, Exception):
            raise self.pages
        return {"ShardIterator": "0"}

    def get_records(self, ShardIterator, Limit):
        page = int(ShardIterator)
        self.calls += 1
        records = [{"eventName": "INSERT", "dynamodb": {"SequenceNumber": str(n), "Keys": {"pk": {"S": "a"}}}}
                   for n in self.pages[page]] if page < len(self.pages) else []
        last = page + 1 >= len(self.pages)
        return {"Records": records, **({} if self.close and last else {"NextShardIterator": str(page + 1)})}


def _reader(streams: ScriptedStreams) -> Readback:
    return Readback(client_factory=lambda service, region: streams)


def test_a_range_is_read_from_its_start_to_its_end_across_pages_and_no_further():
    streams = ScriptedStreams([[10, 11], [], [12, 13, 14]])
    got = _reader(streams).stream_range(STREAM_ARN, SHARD, "11", "13")
    assert [r["dynamodb"]["SequenceNumber"] for r in got] == ["11", "12", "13"]
    assert all(r["eventSourceARN"] == STREAM_ARN for r in got)


def test_a_range_whose_end_never_comes_is_gone():
    with pytest.raises(RangeGone, match="read 1 record"):
        _reader(ScriptedStreams([[11], [], [], []])).stream_range(STREAM_ARN, SHARD, "11", "13")
    with pytest.raises(RangeGone, match="no longer holds the whole range"):
        _reader(ScriptedStreams([[11]], close=True)).stream_range(STREAM_ARN, SHARD, "11", "13")


def _error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}}, "GetShardIterator")


def test_trimmed_or_missing_ranges_are_gone_other_errors_may_pass():
    with pytest.raises(RangeGone, match="TrimmedDataAccessException"):
        _reader(ScriptedStreams(_error("TrimmedDataAccessException"))).stream_range(STREAM_ARN, SHARD, "1", "2")
    with pytest.raises(ReadbackFailed, match="AccessDeniedException"):
        _reader(ScriptedStreams(_error("AccessDeniedException"))).stream_range(STREAM_ARN, SHARD, "1", "2")


def test_dead_letter_batches_respect_the_count_and_the_total_size():
    from indexer.deadletter import MAX_BATCH_BYTES, batches

    assert batches([10] * 23) == [list(range(10)), list(range(10, 20)), [20, 21, 22]]
    big = 190 * 1024
    assert batches([big] * 3) == [[0], [1], [2]]
    assert batches([big, 60 * 1024, 10, big]) == [[0, 1, 2], [3]]
    assert all(sum([big, 60 * 1024, 10, big][p] for p in group) <= MAX_BATCH_BYTES
               for group in batches([big, 60 * 1024, 10, big]))
