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
