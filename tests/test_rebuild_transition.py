"""The rebuild's transition, against the real Elasticsearch and moto: while live containers switch
to dual-writing (the replay's announce wait), one container writes a change of an item to both
indices and another writes the next change to the old one only. The scan's snapshot must then
replace the first change's document, or the second change is lost at the swap."""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import boto3
import pytest

from indexer import handler as lambda_handler
from indexer.apply import Deadline
from indexer.batch import Pipeline
from indexer.records import padded_sequence
from indexer.settings import Settings
from replay import full as replay_full
from stream_events import SEQUENCE_BASE, event, record
from tables import put_items
from test_replay import _at, _of, alias_equals_table, rebuild  # noqa: F401 - rebuild is a fixture

pytestmark = pytest.mark.es

K = {"pk": {"S": "k"}, "sk": {"N": "0"}}
LATE = {"pk": {"S": "late"}, "sk": {"N": "0"}}
OTHER = {"pk": {"S": "other"}, "sk": {"N": "0"}}


def container() -> Pipeline:
    """A new live container: its target cache starts empty."""
    return lambda_handler.build_pipeline(Settings.from_env(require=("DLQ_URL",)))


def deliver(pipeline: Pipeline, *records: dict[str, Any]) -> None:
    summary = pipeline.run(event(*records), Deadline.after(60))
    assert summary.failed == 0 and not summary.error, summary


def item(keys: dict, value: str) -> dict:
    return {**keys, "v": {"S": value}}


def change(sync, keys: dict, value: str, sequence: int, at: float) -> dict:
    return _at(_of(sync, record("MODIFY", keys, item(keys, value), sequence)), at)


def old_view(sync) -> Pipeline:
    """A container whose target cache predates the rebuild and never expires: it keeps writing
    to the serving index only (a container that has not looked again yet)."""
    pipeline = container()
    pipeline.targets.clock = lambda: 0.0
    deliver(pipeline, _at(_of(sync, record("INSERT", OTHER, item(OTHER, "before the replay"), 1)), time.time()))
    return pipeline


def at_scan_start(monkeypatch, before: Callable[[dict], None], after: Callable[[dict], None]) -> None:
    """Run ``before(meta)`` when the replay is about to record its scan start S (the announce
    wait is over: live writers are switching), then S, then ``after(meta)`` before the scan."""
    beat = replay_full._Heartbeat.beat

    def hooked(self, **changes: Any) -> None:
        if "snapshot_started" not in changes:
            return beat(self, **changes)
        before(self.meta)
        beat(self, **{**changes, "snapshot_started": time.time()})
        after(self.meta)

    monkeypatch.setattr(replay_full._Heartbeat, "beat", hooked)


def before_the_replay(sync) -> Pipeline:
    """The table with k and another item; a container whose cache predates the rebuild."""
    put_items(sync.table, [item(K, "r0"), item(OTHER, "before the replay")])
    return old_view(sync)


def r1_to_both(sync) -> dict:
    """Container A looked up the targets after the rebuild target was named: it writes r1 to
    both indices (reading the table, as r1 is near the new index's start). The record."""
    put_items(sync.table, [item(K, "r1")])
    first = change(sync, K, "r1", 11, time.time())
    deliver(container(), first)
    return first


def replay() -> replay_full.Rebuilt:
    return replay_full.run(replay_full.FullOptions(progress=False, workers=1), os.environ)


def test_a_change_only_the_old_index_got_during_the_switch_survives_the_swap(rebuild, monkeypatch):
    stale_cache = before_the_replay(rebuild)
    made: dict[str, dict] = {}

    def switching(meta: dict) -> None:
        made["r1"] = r1_to_both(rebuild)
        # The shard's next batch lands in container B, whose cache predates the target.
        put_items(rebuild.table, [item(K, "r2")])
        deliver(stale_cache, change(rebuild, K, "r2", 12, time.time()))

    def started(meta: dict) -> None:
        # Made well after S (its clock says so): written to both, by sequence; not replaced.
        put_items(rebuild.table, [item(LATE, "after the scan start")])
        made = meta["snapshot_started"] + 61
        deliver(container(), _at(_of(rebuild, record("INSERT", LATE, item(LATE, "after the scan start"), 13)), made))

    at_scan_start(monkeypatch, switching, started)
    rebuilt = replay()

    assert rebuild.docs()["k|0"]["v"] == "r2"
    alias_equals_table(rebuild)
    assert (rebuilt.replaced, rebuilt.read_again) == (1, 1)  # the scan read k right after r1: read again
    kept = rebuild.raw("k|0")["_ddb"]
    assert kept["seq"] == padded_sequence(SEQUENCE_BASE + 11) and "read" in kept
    late = rebuild.raw("late|0")["_ddb"]
    assert late["seq"] == padded_sequence(SEQUENCE_BASE + 13) and "read" not in late
    # A duplicate of r1 delivered after the rebuild is stale: it holds r1's sequence.
    rebuild.configure()
    assert rebuild.deliver(made["r1"]) == {"batchItemFailures": []}
    alias_equals_table(rebuild)


def test_a_transition_record_the_scan_read_clearly_after_takes_the_scanned_item(rebuild, monkeypatch):
    stale_cache = before_the_replay(rebuild)

    def switching(meta: dict) -> None:
        # A container without a table reader applies r1 as it is: made 59 s before the new index
        # was created (within its margin), so more than 60 s before the scan reads k.
        writer = container()
        writer.table_reader = None
        put_items(rebuild.table, [item(K, "r1")])
        deliver(writer, change(rebuild, K, "r1", 11, meta["started"] - 59))
        put_items(rebuild.table, [item(K, "r2")])
        deliver(stale_cache, change(rebuild, K, "r2", 12, time.time()))

    at_scan_start(monkeypatch, switching, lambda meta: None)
    rebuilt = replay()

    alias_equals_table(rebuild)
    assert (rebuilt.replaced, rebuilt.read_again) == (1, 0)
    assert rebuild.raw("k|0")["_ddb"]["seq"] == padded_sequence(SEQUENCE_BASE + 11)
    rebuild.configure()
    assert rebuild.deliver(change(rebuild, K, "r1", 11, time.time())) == {"batchItemFailures": []}
    alias_equals_table(rebuild)


def test_a_delete_only_the_old_index_got_during_the_switch_survives_the_swap(rebuild, monkeypatch):
    stale_cache = before_the_replay(rebuild)
    made: dict[str, dict] = {}

    def switching(meta: dict) -> None:
        made["r1"] = r1_to_both(rebuild)
        boto3.client("dynamodb").delete_item(TableName=rebuild.table, Key=K)
        deliver(stale_cache, _at(_of(rebuild, record("REMOVE", K, None, 12)), time.time()))

    at_scan_start(monkeypatch, switching, lambda meta: None)
    rebuilt = replay()

    # The scan never reads k: the sweep after the load finds r1's document and reads k again.
    assert "k|0" not in rebuild.docs()
    alias_equals_table(rebuild)
    assert (rebuilt.replaced, rebuilt.read_again) == (1, 1)
    assert rebuild.raw("k|0")["_ddb"]["deleted"] is True
    rebuild.configure()
    assert rebuild.deliver(made["r1"]) == {"batchItemFailures": []}
    alias_equals_table(rebuild)
