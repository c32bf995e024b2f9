"""The ordering guard's pure parts: reading what an index holds, choosing writes, reading results."""

from __future__ import annotations

import json

from stream_events import SEQUENCE_BASE, put, remove
from indexer.actions import (
    SNAPSHOT_MARGIN_MS,
    UNKNOWN_SEQUENCE,
    Current,
    Outcome,
    Write,
    bulk_body,
    current_of,
    is_stale,
    item_result,
    item_results,
    read_after,
    written_in_transition,
)
from indexer.records import change_of, padded_sequence


def test_current_reads_the_stored_sequence_and_revision():
    doc = {"found": True, "_seq_no": 7, "_primary_term": 2, "_source": {"_ddb": {"seq": padded_sequence(99)}}}
    assert current_of(doc) == Current(99, 7, 2)
    assert current_of({"found": False}) is None


def test_a_document_without_bookkeeping_loses_to_any_record():
    doc = {"found": True, "_seq_no": 0, "_primary_term": 1, "_source": {}}
    assert current_of(doc).sequence == UNKNOWN_SEQUENCE
    assert not is_stale(change_of(put("a", 1), 0), current_of(doc))


def test_stale_when_the_index_holds_the_same_or_a_newer_record():
    change = change_of(put("a", 5), 0)
    assert is_stale(change, Current(SEQUENCE_BASE + 5, 0, 1))
    assert is_stale(change, Current(SEQUENCE_BASE + 6, 0, 1))
    assert not is_stale(change, Current(SEQUENCE_BASE + 4, 0, 1))
    assert not is_stale(change, None)


def test_absent_documents_are_created_and_present_ones_replaced_only_at_the_read_revision():
    upsert = change_of(put("a", 5, name="x"), 0)
    tombstone = change_of(remove("b", 6), 1)
    lines = bulk_body([Write("idx", upsert, None), Write("idx", tombstone, Current(1, 41, 3))]).split(b"\n")
    assert json.loads(lines[0]) == {"create": {"_index": "idx", "_id": "a"}}
    assert json.loads(lines[1])["name"] == "x"
    assert json.loads(lines[2]) == {"index": {"_index": "idx", "_id": "b", "if_seq_no": 41, "if_primary_term": 3}}
    assert json.loads(lines[3])["_ddb"]["deleted"] is True
    assert lines[4] == b""


# Bulk response items as Elasticsearch 8.19 returns them.
CREATED = {"create": {"_index": "i", "_id": "a", "status": 201, "result": "created"}}
CONFLICT = {"index": {"_index": "i", "_id": "a", "status": 409, "error": {
    "type": "version_conflict_engine_exception", "reason": "[a]: version conflict, required seqNo [3]"}}}
REJECTED = {"index": {"_index": "i", "_id": "a", "status": 429, "error": {
    "type": "es_rejected_execution_exception", "reason": "rejected execution of coordinating operation"}}}
PARSING = {"create": {"_index": "i", "_id": "a", "status": 400, "error": {
    "type": "document_parsing_exception", "reason": "[1:8] failed to parse field [age] of type [double]",
    "caused_by": {"type": "number_format_exception", "reason": "For input string: \"abc\""}}}}
MISSING = {"index": {"_index": "i", "_id": "a", "status": 404, "error": {
    "type": "index_not_found_exception", "reason": "no such index [i]"}}}
UNAVAILABLE = {"index": {"_index": "i", "_id": "a", "status": 503, "error": {
    "type": "unavailable_shards_exception", "reason": "primary shard is not active"}}}


def test_bulk_items_are_sorted_into_what_to_do_next():
    assert item_result(CREATED).outcome is Outcome.APPLIED
    assert item_result(CONFLICT).outcome is Outcome.CONFLICT
    assert item_result(REJECTED).outcome is Outcome.RETRY
    assert item_result(UNAVAILABLE).outcome is Outcome.RETRY
    assert item_result(MISSING).outcome is Outcome.MISSING_INDEX
    parsing = item_result(PARSING)
    assert parsing.outcome is Outcome.PERMANENT
    assert parsing.error_type == "document_parsing_exception"
    assert "age" in parsing.reason and "abc" in parsing.reason


def test_a_response_that_lost_items_is_retried_rather_than_trusted():
    results = item_results({"items": [CREATED]}, 2)
    assert [r.outcome for r in results] == [Outcome.RETRY, Outcome.RETRY]


def test_a_rebuilt_index_document_known_only_before_its_scan_start_plus_margin_is_a_transition_document():
    started = 10_000_000
    image = Current(SEQUENCE_BASE + 1, 3, 1, read=None, at=started + SNAPSHOT_MARGIN_MS - 1)
    assert written_in_transition(image, started)
    assert not written_in_transition(Current(SEQUENCE_BASE + 1, 3, 1, at=started + SNAPSHOT_MARGIN_MS), started)
    # A table state is judged by its read, whatever its record's time.
    assert written_in_transition(Current(SEQUENCE_BASE + 1, 3, 1, read=started, at=started + 10**9), started)
    assert not written_in_transition(Current(0, 3, 1, at=started), started)  # a snapshot
    assert not written_in_transition(Current(UNKNOWN_SEQUENCE, 3, 1, at=started), started)  # no bookkeeping
    assert not written_in_transition(Current(SEQUENCE_BASE + 1, 3, 1), started)  # time unknown
    assert not written_in_transition(image, None) and not written_in_transition(None, started)
    # The scan's page stands in for the item only when read clearly after the document was known.
    assert read_after(image, image.at + SNAPSHOT_MARGIN_MS + 1)
    assert not read_after(image, image.at + SNAPSHOT_MARGIN_MS)
