"""A write that lands between the guard's read and its write: re-read and decide again.

A wrapper around the real store lets another writer in at exactly the worst moment; the
cluster's own if_seq_no check must then turn our write into a conflict, never a lost update.
"""

from __future__ import annotations

import pytest

from stream_events import put
from indexer.apply import Deadline
from indexer.handler import build_pipeline
from indexer.settings import Settings

pytestmark = pytest.mark.es


class RacingStore:
    """The real store, but before its first bulk write another container applies ``cut_in``."""

    def __init__(self, real, cut_in):
        self._real = real
        self._cut_in = cut_in

    def __getattr__(self, name):
        return getattr(self._real, name)

    def bulk(self, body, timeout):
        if self._cut_in is not None:
            cut_in, self._cut_in = self._cut_in, None
            cut_in()
        return self._real.bulk(body, timeout)


def racing(sync, interloper_record):
    settings = Settings.from_env(require=("DLQ_URL",))
    interloper = build_pipeline(settings)
    ours = build_pipeline(settings)

    def cut_in():
        summary = interloper.run({"Records": [interloper_record]}, Deadline.after(30))
        assert summary.indexed == 1

    ours.store = RacingStore(ours.store, cut_in)
    return ours


def test_an_older_write_that_cuts_in_is_overwritten_by_ours(sync):
    sync.deliver(put("a", 5, v="five"))
    ours = racing(sync, put("a", 6, v="six"))
    summary = ours.run({"Records": [put("a", 7, v="seven")]}, Deadline.after(30))
    assert summary.indexed == 1 and summary.failures == []
    assert sync.docs() == {"a": {"pk": "a", "v": "seven"}}


def test_a_newer_write_that_cuts_in_makes_ours_stale(sync):
    sync.deliver(put("a", 5, v="five"))
    ours = racing(sync, put("a", 8, v="eight"))
    summary = ours.run({"Records": [put("a", 7, v="seven")]}, Deadline.after(30))
    assert summary.stale == 1 and summary.indexed == 0 and summary.failures == []
    assert sync.docs() == {"a": {"pk": "a", "v": "eight"}}


def test_a_create_that_loses_the_race_to_exist_is_decided_again(sync):
    sync.deliver(put("other", 1))  # the index exists; "a" does not
    ours = racing(sync, put("a", 6, v="six"))
    summary = ours.run({"Records": [put("a", 7, v="seven")]}, Deadline.after(30))
    assert summary.indexed == 1
    assert sync.docs()["a"] == {"pk": "a", "v": "seven"}
