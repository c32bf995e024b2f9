"""What the store asks the cluster to send back for the guard: only what the guard reads.

A whole bulk answer repeats index, id, version, result and shard counts for every item: about
three times the bytes the guard needs, for the cluster to write and the handler to parse
(bench/bulk_bench.py). The guard still needs each item's status, error and new revision.
"""

from __future__ import annotations

import pytest

from indexer.actions import Outcome, item_results
from indexer.backends import store_for
from indexer.layout import index_body
from indexer.settings import Settings

pytestmark = pytest.mark.es


@pytest.fixture
def store_and_index(sync):
    index = f"{sync.alias}-answers"
    sync.es.indices.create(index=index, **index_body())
    return store_for(Settings.from_env()), index


def test_a_bulk_answer_carries_each_items_status_error_and_revision_only(store_and_index):
    store, index = store_and_index
    body = (b'{"create":{"_index":"%s","_id":"a"}}\n{"v":1}\n'
            b'{"create":{"_index":"%s","_id":"a"}}\n{"v":2}\n'
            b'{"index":{"_index":"%s","_id":"b"}}\n{"_ddb":"not an object"}\n') % ((index.encode(),) * 3)
    response = store.bulk(body, 30)
    created, conflict, refused = response["items"]
    assert set(created["create"]) == {"status", "_seq_no", "_primary_term"}
    assert set(conflict["create"]) == {"status", "error"} and set(refused["index"]) == {"status", "error"}
    outcomes = [result.outcome for result in item_results(response, 3)]
    assert outcomes == [Outcome.APPLIED, Outcome.CONFLICT, Outcome.PERMANENT]
    assert item_results(response, 3)[0].seq_no == created["create"]["_seq_no"]
