"""The guard's first read runs while the batch's images convert, and reading early is safe.

What is shown with a store that answers from memory: the read is under way before the images
are converted, and a read that fails is read again by the guard. What is shown against the real
cluster: a write landing between the early read and our bulk makes ours a conflict, re-read and
decided again, and the newer document stays.
"""

from __future__ import annotations

import threading

import orjson
import pytest

from stream_events import SEQUENCE_BASE, put
from indexer import records as records_module
from indexer.actions import Current
from indexer.apply import Deadline
from indexer.batch import Pipeline
from indexer.errors import RetryableError
from indexer.handler import build_pipeline
from indexer.layout import FixedTargets
from indexer.settings import Settings

#: How long a test waits for the condition it is about; reached in microseconds when it holds.
PATIENCE = 10.0


class MemoryStore:
    """Answers the guard from memory: ``held`` is id → stored sequence; every write lands."""

    def __init__(self, held: dict[str, int], failures: int = 0) -> None:
        self.held = held
        self.failures = failures
        self.reads: list[list[tuple[str, str]]] = []
        self.read_started = threading.Event()

    def current(self, pairs, timeout):
        self.reads.append(list(pairs))
        self.read_started.set()
        if self.failures:
            self.failures -= 1
            raise RetryableError("reading current documents: the cluster answered 503")
        return {pair: Current(self.held[pair[1]], 1, 1) if pair[1] in self.held else None for pair in pairs}

    def bulk(self, body, timeout):
        lines = body.split(b"\n")
        items = []
        for action in lines[0:-1:2]:
            ((op, _),) = orjson.loads(action).items()
            items.append({op: {"status": 201 if op == "create" else 200, "_seq_no": 2, "_primary_term": 1}})
        return {"errors": False, "items": items}


def pipeline(store: MemoryStore) -> Pipeline:
    return Pipeline(store=store, targets=FixedTargets(["things-initial"]), dead_letters=None,  # type: ignore[arg-type]
                    default_alias="things")


def test_the_guard_s_read_is_under_way_while_the_images_convert(monkeypatch):
    store = MemoryStore({"a": SEQUENCE_BASE + 1, "b": SEQUENCE_BASE + 1})
    convert = records_module.document_of
    read_before_converting: list[bool] = []

    def document_of(image):
        if not read_before_converting:  # the first image: has the read begun without waiting for it?
            read_before_converting.append(store.read_started.wait(PATIENCE))
        return convert(image)

    monkeypatch.setattr(records_module, "document_of", document_of)
    summary = pipeline(store).run({"Records": [put("a", 2, v="two"), put("b", 3, v="three")]}, Deadline.after(60))
    assert read_before_converting == [True]
    assert store.reads == [[("things-initial", "a"), ("things-initial", "b")]]  # one read, not two
    assert summary.indexed == 2 and summary.failures == []


def test_a_read_ahead_that_fails_is_made_again_by_the_guard_which_still_decides_by_it():
    store = MemoryStore({"a": SEQUENCE_BASE + 9}, failures=1)
    summary = pipeline(store).run({"Records": [put("a", 5, v="old"), put("b", 6, v="new")]}, Deadline.after(60))
    assert len(store.reads) == 2  # the early read failed; the guard's own read decided
    assert summary.stale == 1 and summary.indexed == 1 and summary.failures == []


def test_a_batch_that_needs_no_read_starts_none():
    store = MemoryStore({})
    insert = put("a", 1, v="new") | {"eventName": "INSERT"}  # a new item: a blind create, no read
    summary = pipeline(store).run({"Records": [insert]}, Deadline.after(60))
    assert store.reads == [] and summary.indexed == 1


class WriteAfterRead:
    """The real store; ``after_read`` runs once, right after the first read returns."""

    def __init__(self, real, after_read) -> None:
        self._real = real
        self.after_read = after_read

    def __getattr__(self, name):
        return getattr(self._real, name)

    def current(self, pairs, timeout):
        found = self._real.current(pairs, timeout)
        if self.after_read is not None:
            after, self.after_read = self.after_read, None
            after()
        return found


@pytest.mark.es
def test_a_write_landing_after_the_early_read_makes_ours_stale_and_the_newer_document_stays(sync):
    settings = Settings.from_env(require=("DLQ_URL",))
    ours, other = build_pipeline(settings), build_pipeline(settings)
    assert ours.run({"Records": [put("a", 5, v="five")]}, Deadline.after(30)).failures == []
    ours.written.forget_index()  # not this container's write any more: it must read "a"
    ours.store = WriteAfterRead(ours.store, lambda: other.run({"Records": [put("a", 9, v="nine")]}, Deadline.after(30)))
    summary = ours.run({"Records": [put("a", 6, v="six")]}, Deadline.after(30))
    assert summary.stale == 1 and summary.failures == []
    assert sync.docs() == {"a": {"pk": "a", "v": "nine"}}
