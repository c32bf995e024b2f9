"""The invariant, against the real cluster: whatever delivery AWS allows, the alias ends equal
to the table.

Histories of puts and deletes over a few keys become stream records; they are delivered in
random batches, some batches twice, records duplicated, and older records redelivered late
(a retry, a redrive). After delivery, the alias must show exactly the table's final items.
"""

from __future__ import annotations

import itertools
import os
import random
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_events import record
from indexer.actions import SNAPSHOT_MARGIN_MS
from indexer.apply import Deadline
from indexer.handler import build_pipeline
from indexer.settings import Settings

pytestmark = pytest.mark.es

EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "40"))
_example = itertools.count()

operations = st.lists(
    st.tuples(st.sampled_from("abcd"), st.one_of(st.none(), st.integers(0, 999))), min_size=1, max_size=30
)


def history(ops: list[tuple[str, int | None]], prefix: str, gaps: list[int]) -> tuple[list[dict], dict]:
    """Stream records for ``ops`` (None = delete) and the table's final state."""
    records, table, sequence = [], {}, 10**25  # 26-digit sequence numbers, beyond a long
    for (name, value), gap in zip(ops, itertools.cycle(gaps)):
        sequence += gap
        key = {"pk": {"S": f"{prefix}{name}"}}
        offset = sequence - 4421584500000000017450439000  # record() adds its own base
        if value is None:
            records.append(record("REMOVE", key, None, offset))
            table.pop(f"{prefix}{name}", None)
        else:
            image = {**key, "v": {"N": str(value)}}
            records.append(record("INSERT" if name not in table else "MODIFY", key, image, offset))
            table[f"{prefix}{name}"] = {"pk": f"{prefix}{name}", "v": value}
    return records, table


def deliveries(records: list[dict], rng: random.Random) -> list[list[dict]]:
    """Batches as Lambda may deliver them: in order per shard, retried whole, duplicated, and
    with older records coming back late."""
    batches: list[list[dict]] = []
    position = 0
    while position < len(records):
        size = rng.randint(1, 6)
        batch = records[position : position + size]
        if rng.random() < 0.3:
            batch = batch + [rng.choice(batch)]  # a duplicate inside the batch
        batches.append(batch)
        if rng.random() < 0.25:
            batches.append(list(batch))  # the whole batch again (a retried invocation)
        position += size
        delivered = records[:position]
        if rng.random() < 0.3:
            late = rng.sample(delivered, k=min(len(delivered), rng.randint(1, 3)))
            batches.append(late)  # older records redelivered after newer ones (redrive)
    return batches


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations, gaps=st.lists(st.integers(1, 10**12), min_size=1, max_size=5), seed=st.integers(0, 2**32))
def test_alias_equals_table_after_any_allowed_delivery(sync, ops, gaps, seed):
    prefix = f"e{next(_example)}-"
    records, table = history(ops, prefix, gaps)
    for batch in deliveries(records, random.Random(seed)):
        assert sync.deliver(*batch) == {"batchItemFailures": []}
    shown = {doc_id: doc for doc_id, doc in sync.docs().items() if doc_id.startswith(prefix)}
    assert shown == table


@settings(max_examples=max(EXAMPLES // 4, 5), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=operations, seed=st.integers(0, 2**32))
def test_concurrent_deliveries_of_the_same_log_converge(sync, ops, seed):
    """Four containers apply the same records in different orders at once (live sync, a retry
    and a redrive racing): the version conflicts this causes must be re-read, never lost."""
    prefix = f"c{next(_example)}-"
    records, table = history(ops, prefix, [7])
    settings_ = Settings.from_env(require=("DLQ_URL",))
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        rng = random.Random(seed + n)
        pipeline = build_pipeline(settings_)
        try:
            for batch in deliveries(records if n % 2 == 0 else list(reversed(records)), rng):
                summary = pipeline.run({"Records": batch}, Deadline.after(30))
                assert summary.failures == [], summary.error
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    shown = {doc_id: doc for doc_id, doc in sync.docs().items() if doc_id.startswith(prefix)}
    assert shown == table


def rebuild_from_snapshot(alias: str, state: dict[str, dict], scan_started: float, name: str) -> None:
    """A full replay as the protocol makes it: a new index whose ``_meta`` says when its scan
    started, the table's state at the scan written as snapshots, then the alias swapped."""
    from indexer.apply import apply
    from indexer.backends import store_for
    from indexer.ids import document_id
    from indexer.layout import ALIAS_FILTER, META_KEY, FixedTargets, alias_indices, index_body, rebuild_alias
    from indexer.records import SNAPSHOT_SEQUENCE, upsert

    store = store_for(Settings.from_env())
    body = index_body()
    body["mappings"]["_meta"] = {META_KEY: {"state": "building", "snapshot_started": scan_started}}
    body["aliases"] = {rebuild_alias(alias): {}}
    store.create_index(name, body, 30)
    snapshots = [upsert(alias, document_id({"pk": {"S": pk}}), {"pk": {"S": pk}, "v": {"N": str(item["v"])}},
                        SNAPSHOT_SEQUENCE) for pk, item in state.items()]
    assert not apply(snapshots, store, FixedTargets([name]), Deadline.after(60)).unresolved
    old = alias_indices(store, alias, 30).serving
    store.update_aliases([{"add": {"index": name, "alias": alias, "filter": ALIAS_FILTER, "is_write_index": True}},
                          {"remove": {"index": name, "alias": rebuild_alias(alias)}}]
                         + [{"remove": {"index": index, "alias": alias}} for index in old], 30)


def record_times(count: int, scanned: int, scan_started: float, near: float, rng: random.Random) -> list[float]:
    """Each record's ApproximateCreationDateTime: those the scan saw before it started, the
    others after; a share ``near`` of them within the snapshot rule's margin of the scan start
    (the uncertain window, where the handler reads the table), the rest far from it."""
    margin = SNAPSHOT_MARGIN_MS / 1000
    times = []
    for i in range(count):
        inside = rng.random() < near
        if i < scanned:
            times.append(scan_started - margin + 1 + i if inside else scan_started - 3600 + i)
        else:
            times.append(scan_started + i if inside else scan_started + 3600 + i)
    return times


@settings(max_examples=max(EXAMPLES // 2, 5), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=operations, seed=st.integers(0, 2**32), cut=st.floats(0, 1), lag=st.integers(0, 5),
       near=st.sampled_from([0.0, 0.5, 1.0]))
def test_alias_equals_table_when_old_records_arrive_after_a_replay(sync, ops, seed, cut, lag, near):
    """Deliveries, a full replay at some point, then the rest, with older records still coming
    late (retries, redrives): the replay's snapshots must win over every record older than its
    scan, and lose to every record after it — also for records made within the margin of the
    scan start, which the handler checks against the table (here moto's, holding the final
    state: by the time a record is delivered again, the table has moved on)."""
    import time

    from indexer import handler as lambda_handler
    from tables import create_table, put_items

    n = next(_example)
    prefix = f"r{n}-"
    records, table = history(ops, prefix, [7])
    table_name = f"P{sync.alias.replace('-', '')}{n}"
    create_table(table_name, sort_key=None, stream=False)
    put_items(table_name, [{"pk": {"S": pk}, "v": {"N": str(item["v"])}} for pk, item in table.items()])
    for rec in records:
        rec["eventSourceARN"] = f"arn:aws:dynamodb:us-east-1:123456789012:table/{table_name}/stream/2026-12-03T00:00:00.000"
    batches = deliveries(records, random.Random(seed))
    replay_at = int(cut * len(batches))
    delivered = [r["dynamodb"]["SequenceNumber"] for batch in batches[:replay_at] for r in batch]
    positions = {r["dynamodb"]["SequenceNumber"]: i for i, r in enumerate(records)}
    seen = max((positions[s] + 1 for s in delivered), default=0)
    # The table runs ahead of the stream: the scan sees ``lag`` records Lambda has not delivered.
    scanned = min(seen + lag, len(records))
    scan_started = time.time()
    times = record_times(len(records), scanned, scan_started, near, random.Random(seed + 1))
    for rec, at in zip(records, times):
        rec["dynamodb"]["ApproximateCreationDateTime"] = at
    _, state = history(ops[:scanned], prefix, [7])

    for batch in batches[:replay_at]:
        assert sync.deliver(*batch) == {"batchItemFailures": []}
    rebuild_from_snapshot(sync.alias, state, scan_started, f"{sync.alias}-r{n}")
    lambda_handler.reset()  # a new container: it sees the rebuilt index and when its scan started
    rng = random.Random(seed)
    late = rng.sample(records[:scanned], k=rng.randint(0, scanned))
    for batch in batches[replay_at:] + [[old] for old in late]:  # old records once more, alone
        assert sync.deliver(*batch) == {"batchItemFailures": []}
    shown = {doc_id: doc for doc_id, doc in sync.docs().items() if doc_id.startswith(prefix)}
    assert shown == table
