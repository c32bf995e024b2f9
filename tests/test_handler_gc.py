"""The handler keeps the cyclic garbage collector out of a batch's way, and leaves it as found.

Why: a batch's tens of thousands of objects live until it ends, so collections during it walk
them again and again and free nothing (docs/benchmarks.md); the container's imported objects
live as long as it does, so they are frozen out of every full collection.
"""

from __future__ import annotations

import gc

import pytest

from stream_events import put
from indexer import handler as lambda_handler
from indexer.handler import collector_paused


class NotingCollector:
    """The real store; notes whether the collector was on when the batch wrote."""

    def __init__(self, real) -> None:
        self._real = real
        self.enabled_while_writing: list[bool] = []

    def __getattr__(self, name):
        return getattr(self._real, name)

    def bulk(self, body, timeout):
        self.enabled_while_writing.append(gc.isenabled())
        return self._real.bulk(body, timeout)


@pytest.mark.es
def test_the_collector_is_off_during_a_batch_and_on_again_after_it(sync):
    sync.deliver(put("a", 1))
    pipeline = lambda_handler.pipeline()
    pipeline.store = noting = NotingCollector(pipeline.store)
    sync.deliver(put("a", 2, v="two"), put("b", 3))
    assert noting.enabled_while_writing == [False] and gc.isenabled()
    assert sync.docs() == {"a": {"pk": "a", "v": "two"}, "b": {"pk": "b"}}


@pytest.mark.es
def test_the_container_s_long_lived_objects_are_frozen_out_of_collections(sync):
    gc.unfreeze()
    lambda_handler.reset()  # the next invocation builds a new container
    assert gc.get_freeze_count() == 0
    sync.deliver(put("a", 1))
    assert gc.get_freeze_count() > 0


def test_the_collector_comes_back_when_the_batch_raises():
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("a batch that failed")
    assert gc.isenabled()


def test_a_collector_turned_off_by_someone_else_stays_off():
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
