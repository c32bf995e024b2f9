"""The cache of what this container wrote: which reads it saves, and why a stale entry is safe.

The cache's rules are pure (first tests); what a stale entry costs is shown against the real
cluster, with another container writing the document between two of ours.
"""

from __future__ import annotations

import pytest

from stream_events import put, remove
from indexer.actions import Current, Outcome, item_result
from indexer.apply import Deadline
from indexer.handler import build_pipeline
from indexer.settings import Settings
from indexer.written import WrittenCache


def test_an_entry_older_than_the_record_stands_in_for_the_read():
    cache = WrittenCache()
    cache.wrote("idx", "a", Current(5, 10, 1))
    assert cache.usable("idx", "a", 6) == Current(5, 10, 1)


def test_an_entry_as_new_as_the_record_is_not_used_only_a_read_may_call_it_stale():
    cache = WrittenCache()
    cache.wrote("idx", "a", Current(5, 10, 1))
    assert cache.usable("idx", "a", 5) is None and cache.usable("idx", "a", 4) is None


def test_entries_are_per_physical_index():
    cache = WrittenCache()
    cache.wrote("idx-old", "a", Current(5, 10, 1))
    assert cache.usable("idx-new", "a", 6) is None


def test_the_least_recently_used_entry_goes_first_past_the_capacity():
    cache = WrittenCache(capacity=2)
    cache.wrote("idx", "a", Current(1, 1, 1))
    cache.wrote("idx", "b", Current(1, 2, 1))
    assert cache.usable("idx", "a", 2) is not None  # "a" is now the most recently used
    cache.wrote("idx", "c", Current(1, 3, 1))
    assert len(cache) == 2
    assert cache.usable("idx", "b", 2) is None and cache.usable("idx", "a", 2) is not None


def test_forgetting_an_index_drops_only_its_entries():
    cache = WrittenCache()
    cache.wrote("idx-1", "a", Current(1, 1, 1))
    cache.wrote("idx-2", "a", Current(1, 1, 1))
    cache.forget_index("idx-1")
    assert cache.usable("idx-1", "a", 2) is None and cache.usable("idx-2", "a", 2) is not None
    cache.forget_index()
    assert len(cache) == 0


def test_an_applied_bulk_item_carries_the_revision_it_made():
    result = item_result({"index": {"status": 200, "_seq_no": 42, "_primary_term": 3}})
    assert (result.outcome, result.seq_no, result.primary_term) == (Outcome.APPLIED, 42, 3)


class CountingStore:
    """The real store, counting the guard's reads; ``between`` runs before the next bulk."""

    def __init__(self, real):
        self._real = real
        self.reads = 0
        self.between = None

    def __getattr__(self, name):
        return getattr(self._real, name)

    def current(self, pairs, timeout):
        self.reads += 1
        return self._real.current(pairs, timeout)

    def bulk(self, body, timeout):
        if self.between is not None:
            between, self.between = self.between, None
            between()
        return self._real.bulk(body, timeout)


@pytest.fixture
def containers(sync):
    """Two warm containers of the handler on the same alias: ours (reads counted) and another."""
    settings = Settings.from_env(require=("DLQ_URL",))
    ours, other = build_pipeline(settings), build_pipeline(settings)
    ours.store = CountingStore(ours.store)
    return ours, other


def run(pipeline, *records):
    summary = pipeline.run({"Records": list(records)}, Deadline.after(30))
    assert summary.failures == [], summary.error
    return summary


@pytest.mark.es
def test_a_change_to_an_item_this_container_wrote_is_written_without_reading(sync, containers):
    ours, _ = containers
    run(ours, put("a", 1, v="one"), put("b", 1, v="one"))
    reads = ours.store.reads
    summary = run(ours, put("a", 2, v="two"), remove("b", 2))
    assert ours.store.reads == reads and summary.indexed == 1 and summary.deleted == 1
    assert sync.docs() == {"a": {"pk": "a", "v": "two"}}


@pytest.mark.es
def test_a_stale_entry_costs_a_re_read_and_the_newer_write_of_another_container_stays(sync, containers):
    ours, other = containers
    run(ours, put("a", 5, v="five"))
    run(other, put("a", 7, v="seven"))  # our entry for "a" is now stale
    reads = ours.store.reads
    summary = run(ours, put("a", 6, v="six"))
    assert ours.store.reads == reads + 1  # the 409 made it read again
    assert summary.stale == 1 and summary.indexed == 0
    assert sync.docs() == {"a": {"pk": "a", "v": "seven"}}


@pytest.mark.es
def test_a_stale_entry_costs_a_re_read_and_our_newer_record_still_lands(sync, containers):
    ours, other = containers
    run(ours, put("a", 5, v="five"))
    run(other, put("a", 7, v="seven"))
    summary = run(ours, put("a", 8, v="eight"))
    assert summary.indexed == 1
    assert sync.docs() == {"a": {"pk": "a", "v": "eight"}}
    reads = ours.store.reads
    run(ours, put("a", 9, v="nine"))  # the entry is fresh again after our write
    assert ours.store.reads == reads and sync.docs() == {"a": {"pk": "a", "v": "nine"}}


@pytest.mark.es
def test_a_write_cutting_in_between_the_cached_decision_and_the_bulk_is_re_read(sync, containers):
    ours, other = containers
    run(ours, put("a", 5, v="five"))
    ours.store.between = lambda: run(other, put("a", 9, v="nine"))
    summary = run(ours, put("a", 6, v="six"))
    assert summary.stale == 1 and sync.docs() == {"a": {"pk": "a", "v": "nine"}}


@pytest.mark.es
def test_a_redelivered_record_is_judged_stale_by_a_read_not_by_the_entry(sync, containers):
    ours, _ = containers
    run(ours, put("a", 5, v="five"))
    reads = ours.store.reads
    summary = run(ours, put("a", 5, v="five"))
    assert ours.store.reads == reads + 1 and summary.stale == 1
