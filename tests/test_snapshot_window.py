"""The snapshot rule's uncertain window, against the real Elasticsearch and moto: a record made
around a rebuild's scan start, delivered after the snapshot, is checked against the table with
a consistent read, and the table's present state is written under its sequence."""

from __future__ import annotations

import types
from typing import Any

import pytest
from botocore.exceptions import ClientError

from indexer import aws
from indexer import handler as lambda_handler
from indexer.layout import META_KEY
from indexer.records import padded_sequence
from indexer.tablestate import MAX_ROUNDS, TableReader
from replay import cli
from stream_events import SEQUENCE_BASE, record
from tables import put_items
from test_replay import _at, _of, alias_equals_table, rebuild  # noqa: F401 - rebuild is a fixture

pytestmark = pytest.mark.es

KEYS = {"pk": {"S": "k"}, "sk": {"N": "0"}}
GONE = {"pk": {"S": "gone"}, "sk": {"N": "0"}}
NOW = {"k|0": {"pk": "k", "sk": 0, "v": "now"}}


class TableCalls:
    """The handler's BatchGetItem calls, seen by a botocore event hook on its client; the hook
    can also make them fail, or leave keys unprocessed, as DynamoDB does when throttled."""

    def __init__(self) -> None:
        self.keys: list[int] = []
        self.error: str | None = None
        self.unprocessed = 0

    @property
    def calls(self) -> int:
        return len(self.keys)

    def install(self) -> None:
        """Into the current container (after ``configure()`` built a new one)."""
        lambda_handler.pipeline().table_reader = TableReader(client_factory=self._client)

    def _client(self, region: str | None) -> Any:
        client = aws.client("dynamodb", region)
        client.meta.events.register("before-call.dynamodb.BatchGetItem", self._before)
        return client

    def _before(self, params: dict[str, Any], **_: Any) -> Any:
        import json

        asked = json.loads(params["body"])["RequestItems"]
        self.keys.append(sum(len(table["Keys"]) for table in asked.values()))
        if self.error:
            raise ClientError({"Error": {"Code": self.error, "Message": "injected by the test"}}, "BatchGetItem")
        if self.unprocessed:
            self.unprocessed -= 1
            (table,) = asked
            return types.SimpleNamespace(status_code=200, headers={}), {
                "Responses": {}, "UnprocessedKeys": {table: {"Keys": [KEYS]}}}
        return None


@pytest.fixture
def table_calls(rebuild) -> TableCalls:  # noqa: F811 - the fixture imported above
    return TableCalls()


def replayed(sync, calls: TableCalls, items: list[dict[str, Any]]) -> float:
    """The table holding ``items``, rebuilt; a new container (it sees the rebuilt index); the
    scan's start as the index records it (seconds)."""
    put_items(sync.table, items)
    assert cli.main(["--full", "--no-progress"]) == 0
    sync.configure()
    calls.install()
    (body,) = sync.es.indices.get(index=sync.alias).body.values()
    return float(body["mappings"]["_meta"][META_KEY]["snapshot_started"])


def modify(sync, keys: dict, value: str, sequence: int, at: float) -> dict:
    return _at(_of(sync, record("MODIFY", keys, {**keys, "v": {"S": value}}, sequence)), at)


def stored_sequence(sync, doc_id: str) -> str:
    return sync.raw(doc_id)["_ddb"]["seq"]


def test_duplicates_made_just_before_the_scan_do_not_regress_the_newer_snapshot(rebuild, table_calls):
    started = replayed(rebuild, table_calls, [{**KEYS, "v": {"S": "now"}}])
    first = modify(rebuild, KEYS, "five seconds before the scan", 5, started - 5)
    assert rebuild.deliver(first) == {"batchItemFailures": []}
    assert rebuild.docs() == NOW
    assert table_calls.calls == 1
    assert stored_sequence(rebuild, "k|0") == padded_sequence(SEQUENCE_BASE + 5)
    # A newer duplicate of the same window, after the first was read back: the document holds
    # the table's state read after it was made, so it is read again, not applied.
    second = modify(rebuild, KEYS, "three seconds before the scan", 6, started - 3)
    assert rebuild.deliver(second) == {"batchItemFailures": []}
    assert rebuild.docs() == NOW
    alias_equals_table(rebuild)


def test_a_duplicate_insert_around_the_scan_does_not_bring_back_an_item_deleted_before_it(rebuild, table_calls):
    started = replayed(rebuild, table_calls, [{**KEYS, "v": {"S": "now"}}])
    insert = _at(_of(rebuild, record("INSERT", GONE, {**GONE, "v": {"S": "deleted before the replay"}}, 6)),
                 started - 5)
    assert rebuild.deliver(insert) == {"batchItemFailures": []}
    assert rebuild.docs() == NOW
    tombstone = rebuild.raw("gone|0")["_ddb"]
    assert tombstone["deleted"] is True and tombstone["seq"] == padded_sequence(SEQUENCE_BASE + 6)
    assert table_calls.calls == 1


def test_a_change_after_the_scan_read_the_item_still_wins_inside_the_window(rebuild, table_calls):
    started = replayed(rebuild, table_calls, [{**KEYS, "v": {"S": "now"}}])
    fresh = {"pk": {"S": "new"}, "sk": {"N": "1"}}
    put_items(rebuild.table, [{**KEYS, "v": {"S": "later"}}, {**fresh, "v": {"S": "created"}}])
    later = modify(rebuild, KEYS, "later", 7, started + 5)
    created = _at(_of(rebuild, record("INSERT", fresh, {**fresh, "v": {"S": "created"}}, 8)), started + 5)
    assert rebuild.deliver(later, created) == {"batchItemFailures": []}
    assert rebuild.docs() == {"k|0": {"pk": "k", "sk": 0, "v": "later"},
                              "new|1": {"pk": "new", "sk": 1, "v": "created"}}
    assert stored_sequence(rebuild, "k|0") == padded_sequence(SEQUENCE_BASE + 7)
    assert table_calls.keys == [2]  # both in one request
    alias_equals_table(rebuild)


@pytest.mark.parametrize("code", ["AccessDeniedException", "ProvisionedThroughputExceededException"])
def test_a_failed_table_read_fails_the_record_and_the_retry_converges(rebuild, table_calls, code):
    started = replayed(rebuild, table_calls, [{**KEYS, "v": {"S": "now"}}])
    table_calls.error = code
    duplicate = modify(rebuild, KEYS, "five seconds before the scan", 5, started - 5)
    other = modify(rebuild, {"pk": {"S": "x"}, "sk": {"N": "1"}}, "an hour later", 9, started + 3600)
    put_items(rebuild.table, [{"pk": {"S": "x"}, "sk": {"N": "1"}, "v": {"S": "an hour later"}}])
    answer = rebuild.deliver(duplicate, other)
    assert answer == {"batchItemFailures": [{"itemIdentifier": duplicate["dynamodb"]["SequenceNumber"]}]}
    assert rebuild.docs()["k|0"] == NOW["k|0"]  # neither applied as it was...
    assert rebuild.dead_letters() == []  # ...nor set aside
    table_calls.error = None
    assert rebuild.deliver(duplicate, other) == {"batchItemFailures": []}  # Lambda's retry
    assert rebuild.docs()["k|0"] == NOW["k|0"]
    alias_equals_table(rebuild)


def test_unprocessed_keys_are_asked_again_and_still_unread_ones_fail_the_record(rebuild, table_calls):
    started = replayed(rebuild, table_calls, [{**KEYS, "v": {"S": "now"}}])
    duplicate = modify(rebuild, KEYS, "five seconds before the scan", 5, started - 5)
    table_calls.unprocessed = 1
    assert rebuild.deliver(duplicate) == {"batchItemFailures": []}
    assert table_calls.calls == 2 and rebuild.docs() == NOW
    table_calls.unprocessed = MAX_ROUNDS
    again = modify(rebuild, KEYS, "four seconds before the scan", 6, started - 4)
    assert rebuild.deliver(again) == {"batchItemFailures": [{"itemIdentifier": again["dynamodb"]["SequenceNumber"]}]}
    assert table_calls.calls == 2 + MAX_ROUNDS and rebuild.docs() == NOW


def test_records_outside_the_window_or_over_a_record_image_read_nothing(rebuild, table_calls):
    started = replayed(rebuild, table_calls, [{**KEYS, "v": {"S": "now"}}])
    old = modify(rebuild, KEYS, "an hour before", 5, started - 3600)
    put_items(rebuild.table, [{**KEYS, "v": {"S": "later"}}, {**GONE, "v": {"S": "new"}}])
    new = modify(rebuild, KEYS, "later", 7, started + 3600)
    insert = _at(_of(rebuild, record("INSERT", GONE, {**GONE, "v": {"S": "new"}}, 8)), started + 3600)
    assert rebuild.deliver(old, new, insert) == {"batchItemFailures": []}
    # Inside the window, but the document holds a record's image: decided by sequence alone.
    inside = modify(rebuild, KEYS, "five seconds before the scan", 6, started - 5)
    assert rebuild.deliver(inside) == {"batchItemFailures": []}
    assert table_calls.calls == 0
    alias_equals_table(rebuild)


def test_a_batch_reads_its_window_records_in_requests_of_at_most_100_keys(rebuild, table_calls):
    items = [{"pk": {"S": f"i{n}"}, "sk": {"N": "0"}, "v": {"S": "now"}} for n in range(150)]
    started = replayed(rebuild, table_calls, items)
    duplicates = [modify(rebuild, {"pk": item["pk"], "sk": item["sk"]}, "before", n + 1, started - 5)
                  for n, item in enumerate(items)]
    assert rebuild.deliver(*duplicates) == {"batchItemFailures": []}
    assert sorted(table_calls.keys) == [50, 100]
    alias_equals_table(rebuild)


def test_a_window_record_whose_arn_names_no_table_is_dead_lettered_not_applied(rebuild, table_calls):
    started = replayed(rebuild, table_calls, [{**KEYS, "v": {"S": "now"}}])
    forged = modify(rebuild, KEYS, "five seconds before the scan", 5, started - 5)
    forged["eventSourceARN"] = "arn:aws:dynamodb:us-east-1:123456789012:table/a b/stream/x"
    assert rebuild.deliver(forged) == {"batchItemFailures": []}
    assert rebuild.docs() == NOW and table_calls.calls == 0
    (letter,) = rebuild.dead_letters()
    assert letter["error"]["class"] == "no_table_to_read"
    assert letter["record"]["dynamodb"]["SequenceNumber"] == forged["dynamodb"]["SequenceNumber"]
