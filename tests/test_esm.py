"""The event source mapping's rules as pure functions: batches, verdicts, retries, bisect, record
age, on-failure messages and shard lineage. No I/O."""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta, timezone

import pytest

from indexer.localsync.esm import (
    MAX_PAYLOAD_BYTES, RECORD_AGE_EXCEEDED, RETRIES_EXHAUSTED, Delivery, MappingConfig, StreamRecord, Verdict,
    event_text, failure_message, function_error, take_batch, verdict_of,
)
from indexer.localsync.shards import Shard, ready_shards, shard_of

T0 = datetime(2026, 11, 27, 0, 38, 4, tzinfo=timezone.utc)


def records(count: int, start: int = 1, text: str = "{}") -> list[StreamRecord]:
    # 22 digits like moto's; a few tests use other lengths on purpose.
    return [StreamRecord(str(1100000000017454423000 + n), T0 + timedelta(seconds=n), text) for n in range(start, start + count)]


def seqs(batch: list[StreamRecord]) -> list[int]:
    return [int(r.sequence) - 1100000000017454423000 for r in batch]


def failures(*sequences: str) -> dict:
    return {"batchItemFailures": [{"itemIdentifier": s} for s in sequences]}


# -- settings ----------------------------------------------------------------------------------


def test_defaults_are_lambdas_for_dynamodb_streams():
    config = MappingConfig()
    assert (config.batch_size, config.maximum_batching_window, config.bisect_batch_on_function_error,
            config.maximum_retry_attempts, config.maximum_record_age) == (100, 0.0, False, -1, -1)
    assert config.problem() is None


@pytest.mark.parametrize("config, flag", [
    (MappingConfig(batch_size=10_001), "--batch-size"),
    (MappingConfig(maximum_batching_window=301), "--maximum-batching-window"),
    (MappingConfig(maximum_retry_attempts=10_001), "--maximum-retry-attempts"),
    (MappingConfig(maximum_record_age=59), "--maximum-record-age"),
])
def test_settings_lambda_would_refuse_name_their_flag(config, flag):
    assert config.problem().startswith(flag)


# -- batches -----------------------------------------------------------------------------------


def test_a_batch_takes_at_most_batch_size_records_in_order():
    buffer = deque(records(7))
    assert seqs(take_batch(buffer, 3)) == [1, 2, 3]
    assert seqs(take_batch(buffer, 3)) == [4, 5, 6]
    assert seqs(take_batch(buffer, 3)) == [7]


def test_a_batch_stops_before_lambdas_payload_limit_but_always_holds_one_record():
    big = "x" * (MAX_PAYLOAD_BYTES // 3)
    buffer = deque(records(4, text=big))
    first = take_batch(buffer, 100)
    assert len(first) == 2 and len(event_text(first).encode()) <= MAX_PAYLOAD_BYTES
    huge = deque(records(1, text="y" * (MAX_PAYLOAD_BYTES + 1)))
    assert len(take_batch(huge, 100)) == 1


def test_the_event_is_the_records_under_Records():
    assert event_text(records(2, text='{"a":1}')) == '{"Records":[{"a":1},{"a":1}]}'


# -- verdicts ----------------------------------------------------------------------------------

BATCH = ["9", "10", "11"]  # different lengths: the lowest is found by value, not by text


@pytest.mark.parametrize("response", [None, {}, {"batchItemFailures": []}, {"batchItemFailures": None}])
def test_empty_or_null_responses_are_complete_success(response):
    assert verdict_of(response, BATCH) == Verdict(ok=True)


def test_the_lowest_reported_sequence_number_is_where_delivery_resumes():
    verdict = verdict_of(failures("11", "10"), BATCH)
    assert not verdict.ok and verdict.first_failed == 1 and not verdict.function_error


@pytest.mark.parametrize("response", [
    failures(""),
    {"batchItemFailures": [{"itemIdentifier": None}]},
    {"batchItemFailures": [{"ItemIdentifier": "10"}]},
    failures("12"),
    {"batchItemFailures": "10"},
    ["10"],
])
def test_unusable_or_unknown_item_identifiers_fail_the_whole_batch(response):
    verdict = verdict_of(response, BATCH)
    assert verdict.function_error and verdict.reason


def test_without_report_batch_item_failures_any_return_is_success():
    assert verdict_of(failures("10"), BATCH, report_batch_item_failures=False).ok


# -- retries, partial failures, bisect ---------------------------------------------------------


def test_success_acknowledges_the_whole_batch():
    delivery = Delivery.of(records(3), MappingConfig())
    step = delivery.settle(Verdict(ok=True))
    assert step.acknowledged == records(3)[-1].sequence and delivery.done


def test_a_partial_failure_acknowledges_the_records_before_it_and_retries_from_it():
    batch = records(5)
    delivery = Delivery.of(batch, MappingConfig())
    step = delivery.settle(verdict_of(failures(batch[3].sequence, batch[2].sequence), [r.sequence for r in batch]))
    assert step.acknowledged == batch[1].sequence and step.discard is None
    assert seqs(delivery.current()) == [3, 4, 5]


def test_a_failure_on_the_first_record_acknowledges_nothing():
    batch = records(3)
    delivery = Delivery.of(batch, MappingConfig())
    step = delivery.settle(Verdict(ok=False, first_failed=0))
    assert step.acknowledged is None and seqs(delivery.current()) == [1, 2, 3]


def test_function_errors_retry_the_whole_batch_up_to_the_maximum_then_discard_it():
    delivery = Delivery.of(records(4), MappingConfig(maximum_retry_attempts=2))
    for _ in range(2):
        step = delivery.settle(function_error("boom"))
        assert step.discard is None and step.acknowledged is None and seqs(delivery.current()) == [1, 2, 3, 4]
    step = delivery.settle(function_error("boom"))
    assert step.discard.condition == RETRIES_EXHAUSTED
    assert step.discard.invocations == 3 and step.discard.function_error
    assert seqs(step.discard.records) == [1, 2, 3, 4]
    assert step.acknowledged == records(4)[-1].sequence and delivery.done


def test_zero_retry_attempts_discard_after_the_first_failure():
    step = Delivery.of(records(2), MappingConfig(maximum_retry_attempts=0)).settle(function_error("x"))
    assert step.discard is not None and step.discard.invocations == 1


def test_infinite_retries_never_discard():
    delivery = Delivery.of(records(2), MappingConfig())
    assert all(delivery.settle(function_error("x")).discard is None for _ in range(1000))


def test_partial_failures_count_as_retries_and_discard_only_the_unacknowledged_rest():
    batch = records(4)
    delivery = Delivery.of(batch, MappingConfig(maximum_retry_attempts=1))
    delivery.settle(Verdict(ok=False, first_failed=1))
    step = delivery.settle(Verdict(ok=False, first_failed=1))  # now records 3.. failed
    assert seqs(step.discard.records) == [3, 4] and step.discard.invocations == 2
    assert not step.discard.function_error
    assert step.acknowledged == batch[-1].sequence


def bisect_until_done(batch: list[StreamRecord], bad: int, config: MappingConfig) -> tuple[list[list[int]], list]:
    """Drive a delivery where any invocation holding record ``bad`` raises."""
    delivery = Delivery.of(batch, config)
    invoked: list[list[int]] = []
    discards = []
    while not delivery.done:
        current = seqs(delivery.current())
        invoked.append(current)
        step = delivery.settle(function_error("bad record") if bad in current else Verdict(ok=True))
        if step.discard:
            discards.append(step.discard)
    return invoked, discards


def test_bisect_splits_a_failing_batch_until_the_bad_record_stands_alone():
    invoked, discards = bisect_until_done(
        records(8), bad=6, config=MappingConfig(bisect_batch_on_function_error=True, maximum_retry_attempts=1)
    )
    assert invoked == [
        [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4], [5, 6, 7, 8], [5, 6], [5], [6], [6], [7, 8],
    ]
    (discard,) = discards
    assert seqs(discard.records) == [6] and discard.condition == RETRIES_EXHAUSTED
    # every invocation that carried record 6: 8 records, 4, 2, then alone twice
    assert discard.invocations == 5


def test_bisect_with_no_retries_still_isolates_the_bad_record():
    invoked, discards = bisect_until_done(
        records(4), bad=1, config=MappingConfig(bisect_batch_on_function_error=True, maximum_retry_attempts=0)
    )
    assert invoked == [[1, 2, 3, 4], [1, 2], [1], [2], [3, 4]]
    assert [seqs(d.records) for d in discards] == [[1]]


def test_with_bisect_a_partial_failure_resumes_at_the_reported_record():
    batch = records(6)
    delivery = Delivery.of(batch, MappingConfig(bisect_batch_on_function_error=True))
    step = delivery.settle(Verdict(ok=False, first_failed=4))
    assert not step.bisected and step.acknowledged == batch[3].sequence
    assert seqs(delivery.current()) == [5, 6]


# -- record age --------------------------------------------------------------------------------


def test_records_older_than_the_maximum_age_are_split_off_and_discarded():
    batch = records(4)  # arrivals T0+1s .. T0+4s
    delivery = Delivery.of(batch, MappingConfig(maximum_record_age=60))
    assert delivery.expire(T0 + timedelta(seconds=61)) is None
    discard = delivery.expire(T0 + timedelta(seconds=62.5))
    assert seqs(discard.records) == [1, 2] and discard.condition == RECORD_AGE_EXCEEDED
    assert seqs(delivery.current()) == [3, 4]
    assert seqs(delivery.expire(T0 + timedelta(days=1)).records) == [3, 4] and delivery.done


def test_no_record_age_limit_by_default():
    assert Delivery.of(records(2), MappingConfig()).expire(T0 + timedelta(days=365)) is None


# -- on-failure message ------------------------------------------------------------------------


def test_the_on_failure_message_has_the_shape_aws_sends():
    delivery = Delivery.of(records(3), MappingConfig(maximum_retry_attempts=2))
    for _ in range(3):
        step = delivery.settle(function_error("x"))
    message = failure_message(
        step.discard, shard_id="shardId-1", stream_arn="arn:aws:dynamodb:us-east-1:123456789012:table/T/stream/x",
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:local-sync",
        now=datetime(2026, 11, 27, 0, 38, 6, 21000, tzinfo=timezone.utc), request_id="r-1",
    )
    assert message == {
        "requestContext": {"requestId": "r-1", "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:local-sync",
                           "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 3},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": "2026-11-27T00:38:06.021Z",
        "DDBStreamBatchInfo": {
            "shardId": "shardId-1",
            "startSequenceNumber": "1100000000017454423001",
            "endSequenceNumber": "1100000000017454423003",
            "approximateArrivalOfFirstRecord": "2026-11-27T00:38:05Z",
            "approximateArrivalOfLastRecord": "2026-11-27T00:38:07Z",
            "batchSize": 3,
            "streamArn": "arn:aws:dynamodb:us-east-1:123456789012:table/T/stream/x",
        },
    }


# -- shard lineage -----------------------------------------------------------------------------


def test_children_wait_for_their_parent_and_siblings_come_oldest_first():
    parent = Shard("p", None, 100, closed=True)
    left, right = Shard("l", "p", 300, closed=False), Shard("r", "p", 200, closed=False)
    assert ready_shards([right, left, parent], finished=set()) == [parent]
    assert ready_shards([right, left, parent], finished={"p"}) == [right, left]


def test_a_child_whose_parent_was_trimmed_from_the_stream_is_ready():
    assert ready_shards([Shard("c", "gone", 5, closed=False)], finished=set())[0].id == "c"


def test_shard_of_reads_describe_stream():
    shard = shard_of({"ShardId": "s", "ParentShardId": "p",
                      "SequenceNumberRange": {"StartingSequenceNumber": "12", "EndingSequenceNumber": "20"}})
    assert shard == Shard("s", "p", 12, closed=True)
