"""Documents a rebuilt index got while the live path was switching to it, replaced by the snapshot.

A replay names its new index the rebuild target, waits out the live path's target cache and only
then records the scan start S. During that wait some containers write every change to both
indices and some still only to the old one: container A applies record r1 of item k to both, the
next batch of the shard lands in container B, whose cache predates the target, and r2 (a later
change of k, still before S) reaches only the old index. A snapshot ``create`` of k then finds
r1's document and would lose to it — r2 lost for good at the swap. So when a snapshot conflicts
with a document known only as of before S + the margin (``written_in_transition``), the
snapshot replaces it: the item's state is written as a *table state* under the document's own
sequence (duplicates of r1 and older still lose by sequence, every later record still wins),
guarded by the revision read, so a live write in between makes it read and decide again.

The state written is the scan's page when that read was clearly after the document was known
(``read_after``), else the item read again with a consistent ``BatchGetItem``
(indexer/tablestate.py): the present is never older than either. README, "Snapshots and records".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import structlog

from indexer.actions import (SNAPSHOT_MARGIN_MS, Current, Outcome, Write, bulk_body, item_results, read_after,
                             written_in_transition)
from indexer.apply import CONFLICT_ROUNDS, Deadline, RetryPolicy
from indexer.errors import ClusterError, ReadbackFailed, RecordError, ReplayAborted, RetryableError
from indexer.ids import document_id
from indexer.lambdashape import json_safe
from indexer.layout import snapshot_times
from indexer.records import RESERVED_FIELD, SNAPSHOT_SEQUENCE, Change, padded_sequence, tombstone, upsert
from indexer.search import Store
from indexer.tablestate import MAX_KEYS, TableReader

from . import table as tables
from .wiring import Wiring

log = structlog.get_logger("replay.transition")


@dataclass(frozen=True)
class Replaced:
    """What replacing transition documents did."""

    #: Documents replaced by the item's state.
    count: int = 0
    #: Of those, the ones whose item was read again (the scan's read was too close to them).
    read_again: int = 0
    #: (document id, reason) of states the cluster refused.
    refused: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Transition:
    """What a bulk of snapshots needs to replace the transition documents it conflicts with."""

    alias: str
    table: tables.TableInfo
    #: The items as the source read them.
    source: list[dict[str, Any]]
    #: When the source read those items (ms): taken before the Scan request; an export's time.
    #: None: the items are only keys (the sweep), every state is read from the table.
    read_ms: int | None
    #: The index's scan start, S (ms).
    started_ms: int
    reader: TableReader
    clock: Callable[[], float] = time.time
    _by_id: dict[str, dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def items(self) -> dict[str, dict[str, Any]]:
        """Document id → the item as the source read it; built on first use (only a bulk
        that met transition documents needs it)."""
        if self._by_id is None:
            self._by_id = {}
            for item in self.source:
                try:
                    self._by_id[document_id(self.table.keys_of(item))] = item
                except (RecordError, KeyError):  # refused by snapshot_changes already
                    continue
        return self._by_id

    def replace(self, store: Store, index: str, conflicted: list[str], policy: RetryPolicy,
                sleep: Callable[[float], None] = time.sleep) -> Replaced:
        """Replace, among the documents ``conflicted`` snapshots found, those written in the
        transition. Raises ReplayAborted when any cannot be settled: the alias must not move
        over a change the new index may lack."""
        deadline = Deadline.after(600)
        pending = list(conflicted)
        replaced = read_again = 0
        refused: list[tuple[str, str]] = []
        failures = 0
        rounds = 0
        while pending:
            try:
                current = store.current([(index, doc_id) for doc_id in pending], policy.request_timeout)
                chosen = {doc_id: found for doc_id in pending
                          if (found := current.get((index, doc_id))) is not None
                          and written_in_transition(found, self.started_ms)}
                if not chosen:
                    break
                writes, reread, unindexable = self._states(index, chosen, deadline)
                refused += unindexable
                if not writes:
                    break
                response = store.bulk(bulk_body(writes), policy.request_timeout)
            except (RetryableError, ReadbackFailed) as exc:
                failures += 1
                if failures >= policy.max_attempts:
                    raise ReplayAborted(f"{len(pending)} documents written while live writers switched to {index} "
                                        f"could not be replaced: {exc}") from None
                sleep(min(policy.initial_wait * 2 ** failures, policy.max_wait))
                continue
            except ClusterError as exc:
                raise ReplayAborted(f"replacing documents written while live writers switched: {exc}") from None
            pending = []
            for write, result in zip(writes, item_results(response, len(writes))):
                doc_id = write.change.doc_id
                if result.outcome is Outcome.APPLIED:
                    replaced += 1
                    read_again += doc_id in reread
                elif result.outcome is Outcome.PERMANENT:
                    refused.append((doc_id, f"{result.error_type}: {result.reason}"))
                elif result.outcome is Outcome.MISSING_INDEX:
                    raise ReplayAborted(f"index {index!r} disappeared: {result.reason}")
                else:  # a live write came in between (read again, decide again), or transient
                    pending.append(doc_id)
            rounds += 1
            if pending and rounds >= CONFLICT_ROUNDS * policy.max_attempts:
                raise ReplayAborted(f"{len(pending)} documents kept changing while being replaced in {index}")
        if replaced:
            log.info("transition_documents_replaced", index=index, count=replaced, read_again=read_again)
        return Replaced(replaced, read_again, refused)

    def _states(self, index: str, chosen: dict[str, Current],
                deadline: Deadline) -> tuple[list[Write], set[str], list[tuple[str, str]]]:
        """The guarded writes of the item's state for each chosen document, the ids whose item
        was read again for it, and (id, reason) of states that cannot be indexed."""
        writes: list[Write] = []
        refused: list[tuple[str, str]] = []
        scanned = self.read_ms
        again = [doc_id for doc_id, found in chosen.items() if scanned is None or not read_after(found, scanned)]
        present: dict[str, dict[str, Any] | None] = {}
        read = 0
        if again:
            # Taken before the read is sent: what it returns is at least this recent.
            read = int(self.clock() * 1000)
            keys = {doc_id: json_safe(self.table.keys_of(self.items[doc_id])) for doc_id in again}
            found = self.reader.items(self.table.name, None, list(keys.values()), deadline.remaining)
            present = {doc_id: found.get(document_id(key)) for doc_id, key in keys.items()}
        for doc_id, current in chosen.items():
            if doc_id in present:
                change = self._state(doc_id, present[doc_id], current.sequence, read)
            else:
                change = self._state(doc_id, self.items[doc_id], current.sequence, scanned or 0)
            if isinstance(change, RecordError):
                refused.append((doc_id, f"{change.kind}: {change.message}"))
            else:
                writes.append(Write(index, change, current))
        return writes, set(again), refused

    def _state(self, doc_id: str, item: dict[str, Any] | None, sequence: int, read: int) -> Change | RecordError:
        try:
            change = (tombstone(self.alias, doc_id, sequence, read=read) if item is None
                      else upsert(self.alias, doc_id, item, sequence, read=read))
        except RecordError as error:
            return error
        change.table_state = True
        return change


def scan_started(store: Store, index: str, timeout: float = 30) -> int | None:
    """The scan start S (ms) the index being built records, None when it records none."""
    return snapshot_times(store.definitions([index], timeout)).get(index)


def transition_query(started_ms: int) -> dict[str, Any]:
    """The documents of a rebuilt index still known only as of its transition once the scan is
    done: a record's image made before S + the margin, or a table state read before S — never a
    snapshot, nor a tombstone (the item is gone, and its absence is what the alias shows)."""
    return {"bool": {
        "should": [
            {"bool": {"filter": [{"range": {f"{RESERVED_FIELD}.at": {"lt": started_ms + SNAPSHOT_MARGIN_MS}}}],
                      "must_not": [{"exists": {"field": f"{RESERVED_FIELD}.read"}}]}},
            {"range": {f"{RESERVED_FIELD}.read": {"lt": started_ms}}},
        ],
        "minimum_should_match": 1,
        "must_not": [{"term": {f"{RESERVED_FIELD}.seq": padded_sequence(SNAPSHOT_SEQUENCE)}},
                     {"term": {f"{RESERVED_FIELD}.deleted": True}}],
    }}


def sweep(w: Wiring, index: str, policy: RetryPolicy, sleep: Callable[[float], None] = time.sleep) -> Replaced:
    """After the load, before the swap: the transition documents no snapshot met — their item
    was deleted before the scan, by a change that reached only the old index — replaced by the
    item's present state, read from the table (a tombstone, as it is gone). ReplayAborted when
    any cannot be settled."""
    started = scan_started(w.store, index)
    if started is None:
        return Replaced()
    # The build refreshes only when asked (bulk-load settings): the search must see every write.
    w.store.refresh(index, 300)
    keys: list[dict[str, Any]] = []
    unknown: list[tuple[str, str]] = []
    for hit in w.store.scan(index, 60, query=transition_query(started)):
        found = tables.keys_claimed(w.table, hit["_id"], hit.get("_source") or {})
        if found is None:
            unknown.append((hit["_id"], "written while live writers switched, and its key cannot be read back "
                                        "from the document to check it against the table"))
        else:
            keys.append(found)
    reader = TableReader(client_factory=lambda region: w.dynamodb)
    count = read_again = 0
    refused = list(unknown)
    for start in range(0, len(keys), MAX_KEYS):
        chunk = keys[start:start + MAX_KEYS]
        transition = Transition(w.alias, w.table, chunk, None, started, reader)
        done = transition.replace(w.store, index, list(transition.items), policy, sleep)
        count, read_again, refused = count + done.count, read_again + done.read_again, refused + done.refused
    log.info("transition_swept", index=index, found=len(keys) + len(unknown), replaced=count,
             unknown=len(unknown))
    return Replaced(count, read_again, refused)
