"""The snapshot rule's pure decisions: which records are stale against a table read, which are
applied as they are, and which need the item's present state from the table."""

from __future__ import annotations

import pytest

from stream_events import SEQUENCE_BASE, put
from indexer.actions import (
    SNAPSHOT_MARGIN_MS,
    Current,
    current_of,
    in_snapshot_window,
    needs_table_state,
    read_time,
    stale_against_snapshot,
)
from indexer.records import change_of, padded_sequence

STARTED = 1_796_000_000_000  # ms
SNAPSHOT = Current(0, 3, 1)
RECORD_IMAGE = Current(SEQUENCE_BASE + 1, 4, 1)


def made_at(ms: int, sequence: int = 5):
    change = change_of(put("a", sequence), 0)
    change.at = ms
    return change


@pytest.mark.parametrize("offset, window", [
    (-SNAPSHOT_MARGIN_MS - 1, False), (-SNAPSHOT_MARGIN_MS, True), (0, True),
    (SNAPSHOT_MARGIN_MS - 1, True), (SNAPSHOT_MARGIN_MS, False),
])
def test_the_window_is_the_margin_on_either_side_of_the_read(offset, window):
    assert in_snapshot_window(made_at(STARTED + offset), STARTED) is window


@pytest.mark.parametrize("current", [None, SNAPSHOT])
def test_a_window_record_over_a_snapshot_or_a_missing_document_needs_the_table(current):
    assert needs_table_state(made_at(STARTED - 5_000), current, STARTED)
    assert not stale_against_snapshot(made_at(STARTED - 5_000), current, STARTED)
    assert stale_against_snapshot(made_at(STARTED - SNAPSHOT_MARGIN_MS - 1), current, STARTED)
    assert not needs_table_state(made_at(STARTED + SNAPSHOT_MARGIN_MS), current, STARTED)


def test_a_window_record_over_a_record_image_is_judged_by_sequence_alone():
    assert not needs_table_state(made_at(STARTED), RECORD_IMAGE, STARTED)
    assert not stale_against_snapshot(made_at(STARTED - 3_600_000), RECORD_IMAGE, STARTED)


def test_a_table_state_is_judged_by_when_it_was_read_and_by_the_scan_start():
    read_soon = Current(SEQUENCE_BASE + 1, 4, 1, read=STARTED + 10_000)
    assert read_time(read_soon, STARTED) == STARTED + 10_000
    # Made within the margin of the read, before the margin after the scan start: read again.
    assert needs_table_state(made_at(STARTED + 20_000, 9), read_soon, STARTED)
    # Made clearly after the scan started: by sequence, even over the later read (a hot item
    # does not read the table on every batch after one read).
    assert not needs_table_state(made_at(STARTED + SNAPSHOT_MARGIN_MS, 9), read_soon, STARTED)
    assert not stale_against_snapshot(made_at(STARTED + SNAPSHOT_MARGIN_MS, 9), read_soon, STARTED)
    read_late = Current(SEQUENCE_BASE + 1, 4, 1, read=STARTED + 3_600_000)
    # Made long before that read (even after the scan started): the read saw it.
    assert stale_against_snapshot(made_at(STARTED + 600_000, 9), read_late, STARTED)
    assert not needs_table_state(made_at(STARTED + 600_000, 9), read_late, STARTED)
    assert not needs_table_state(made_at(STARTED + 3_590_000, 9), read_late, STARTED)


def test_repairs_table_states_and_records_without_a_time_are_never_in_doubt():
    repair, table_state, timeless = made_at(STARTED), made_at(STARTED), change_of(put("a", 5), 0)
    repair.repair = True
    table_state.table_state = True
    timeless.at = None
    for change in (repair, table_state, timeless):
        assert not needs_table_state(change, None, STARTED)
        assert not stale_against_snapshot(change, None, STARTED)
    assert not needs_table_state(made_at(STARTED), None, None)  # an index no rebuild made


def test_the_read_time_is_read_back_from_the_document():
    doc = {"found": True, "_seq_no": 7, "_primary_term": 2,
           "_source": {"_ddb": {"seq": padded_sequence(99), "read": STARTED}}}
    assert current_of(doc) == Current(99, 7, 2, STARTED)
    doc["_source"]["_ddb"]["read"] = "not a time"
    assert current_of(doc).read is None


@pytest.mark.parametrize("arn, expected", [
    ("arn:aws:dynamodb:eu-west-1:123456789012:table/Things/stream/2026-12-03T00:00:00.000", ("Things", "eu-west-1")),
    ("arn:aws-cn:dynamodb:cn-north-1:123456789012:table/my_table.v2/stream/x", ("my_table.v2", "cn-north-1")),
    ("arn:aws:dynamodb:us-east-1:123456789012:table/a b/stream/x", None),
    ("arn:aws:dynamodb:us-east-1:123456789012:table/ab/stream/x", None),
    ("arn:aws:dynamodb:not a region:123456789012:table/Things/stream/x", None),
    ("arn:aws:sqs:us-east-1:123456789012:queue", None),
    (None, None),
])
def test_the_table_to_read_comes_from_a_valid_dynamodb_arn_only(arn, expected):
    from indexer.tablestate import table_to_read

    assert table_to_read(arn) == expected
