"""The retry loop's logic with a scripted store: what is retried, what is not, and when it stops.

A fake is right here: the point is the decisions (the real cluster's outage is tested in
test_handler.py), and a script makes per-item 429s and partial failures exact.
"""

from __future__ import annotations

from stream_events import SEQUENCE_BASE, put
from indexer.actions import Current
from indexer.apply import Deadline, RetryPolicy, apply
from indexer.errors import ClusterError, RetryableError
from indexer.layout import FixedTargets
from indexer.records import change_of


def item(status: int, error_type: str = "") -> dict:
    body: dict = {"status": status}
    if error_type:
        body["error"] = {"type": error_type, "reason": f"{error_type} happened"}
    return {"index": body}


class ScriptedStore:
    """Answers bulk requests from a script; records the ids each request carried."""

    def __init__(self, *responses) -> None:
        self.responses = list(responses)
        self.requests: list[list[str]] = []
        self.state: dict = {}

    def current(self, pairs, timeout):
        return {pair: self.state.get(pair) for pair in pairs}

    def bulk(self, body: bytes, timeout: float) -> dict:
        import json

        lines = body.split(b"\n")
        ids = [next(iter(json.loads(line).values()))["_id"] for line in lines[0:-1:2]]
        self.requests.append(ids)
        response = self.responses.pop(0)
        if isinstance(response, Exception):
            raise response
        return {"items": [response[i] for i in range(len(ids))]}


def changes(*names: str):
    return [change_of(put(name, n + 1), n) for n, name in enumerate(names)]


def run(store, batch, policy=RetryPolicy(max_attempts=5), seconds=30.0, sleeps=None):
    slept = sleeps if sleeps is not None else []
    return apply(batch, store, FixedTargets(["idx"]), Deadline.after(seconds), policy, sleep=slept.append)


def test_only_the_items_refused_with_429_are_sent_again():
    store = ScriptedStore(
        [item(201), item(429, "es_rejected_execution_exception"), item(201)],
        [item(201)],
    )
    result = run(store, changes("a", "b", "c"))
    assert store.requests == [["a", "b", "c"], ["b"]]
    assert sorted(c.doc_id for c in result.applied) == ["a", "b", "c"]


def test_a_failed_request_is_retried_with_growing_waits_then_succeeds():
    sleeps: list[float] = []
    store = ScriptedStore(RetryableError("connection refused"), RetryableError("timeout"), [item(201)])
    result = run(store, changes("a"), sleeps=sleeps)
    assert [c.doc_id for c in result.applied] == ["a"]
    assert len(sleeps) == 2 and sleeps[0] > 0


def test_giving_up_leaves_the_changes_unresolved_with_the_reason():
    store = ScriptedStore(*[RetryableError("connection refused")] * 5)
    result = run(store, changes("a", "b"))
    assert sorted(c.doc_id for c in result.unresolved) == ["a", "b"]
    assert "connection refused" in result.last_error
    assert len(store.requests) == 5


def test_no_retry_starts_once_the_time_budget_is_spent():
    store = ScriptedStore(*[RetryableError("down")] * 10)
    result = run(store, changes("a"), policy=RetryPolicy(max_attempts=10), seconds=0.1)
    assert [c.doc_id for c in result.unresolved] == ["a"]
    assert len(store.requests) == 0  # 0.1 s is below what one request may take


def test_a_refused_document_is_dead_and_the_others_applied():
    store = ScriptedStore([item(400, "document_parsing_exception"), item(201)])
    result = run(store, changes("a", "b"))
    ((dead, error),) = result.dead
    assert dead.doc_id == "a" and error.kind == "document_parsing_exception"
    assert [c.doc_id for c in result.applied] == ["b"]


def test_a_conflict_is_read_again_and_found_stale():
    store = ScriptedStore([item(409, "version_conflict_engine_exception")])
    original_bulk = store.bulk

    def bulk_then_newer_appears(body, timeout):
        response = original_bulk(body, timeout)
        store.state[("idx", "a")] = Current(SEQUENCE_BASE + 99, 5, 1)  # written by someone else meanwhile
        return response

    store.bulk = bulk_then_newer_appears
    result = run(store, changes("a"))
    assert [c.doc_id for c in result.stale] == ["a"]
    assert store.requests == [["a"]]


def test_credentials_refused_stop_at_once_without_retrying():
    store = ScriptedStore(ClusterError("Elasticsearch refused the credentials (401)"))
    result = run(store, changes("a"))
    assert [c.doc_id for c in result.unresolved] == ["a"]
    assert "credentials" in result.last_error and len(store.requests) == 1


class CountingStore(ScriptedStore):
    def __init__(self, *responses) -> None:
        super().__init__(*responses)
        self.reads: list[list[str]] = []

    def current(self, pairs, timeout):
        self.reads.append([doc_id for _, doc_id in pairs])
        return super().current(pairs, timeout)


def inserts(*names: str):
    from stream_events import record

    return [change_of(record("INSERT", {"pk": {"S": n}}, {"pk": {"S": n}}, i + 1), i) for i, n in enumerate(names)]


def test_an_insert_is_created_without_reading_first():
    store = CountingStore([item(201), item(201)])
    result = run(store, inserts("a", "b"))
    assert store.reads == [] and sorted(c.doc_id for c in result.applied) == ["a", "b"]


def test_an_insert_whose_document_exists_reads_and_decides_like_any_change():
    store = CountingStore([item(409, "version_conflict_engine_exception"), item(201)], [item(201)])
    store.state[("idx", "a")] = Current(SEQUENCE_BASE - 5, 3, 1)  # an older tombstone, say
    result = run(store, inserts("a", "b"))
    assert store.reads == [["a"]]  # only the conflicting one, and only after its create failed
    assert store.requests == [["a", "b"], ["a"]]
    assert sorted(c.doc_id for c in result.applied) == ["a", "b"]


def test_an_insert_older_than_what_exists_ends_stale():
    store = CountingStore([item(409, "version_conflict_engine_exception")])
    store.state[("idx", "a")] = Current(SEQUENCE_BASE + 99, 3, 1)
    result = run(store, inserts("a"))
    assert [c.doc_id for c in result.stale] == ["a"] and store.reads == [["a"]]
