"""Replay's swap under faults, through the fault-injection proxy: whatever fails, search keeps
a complete index behind the alias, and a replay never swaps onto anything but its own build."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from faults import FaultProxy, Rule
from replay import cli
from replay import full as replay_full
from tables import put_items
from test_replay import alias_equals_table, rebuild, serving  # noqa: F401 (fixture)

pytestmark = pytest.mark.es


@pytest.fixture
def proxy(es_url, monkeypatch):
    """The cluster behind a fault proxy; the product (replay and handler) goes through it."""
    faulty = FaultProxy(es_url)
    monkeypatch.setenv("ELASTICSEARCH_URL", faulty.url)
    try:
        yield faulty
    finally:
        faulty.close()


def items(n: int) -> list[dict]:
    return [{"pk": {"S": f"k{i}"}, "sk": {"N": "0"}, "v": {"N": str(i)}} for i in range(n)]


def test_a_failure_after_the_swap_keeps_the_new_index_serving(rebuild, proxy):
    put_items(rebuild.table, items(5))
    assert cli.main(["--full", "--no-progress"]) == 0
    before = serving(rebuild)
    # The swap lands; the heartbeat's final ``_meta`` write after it fails.
    proxy.add(Rule("POST", r"^/_aliases$", action="call", after=True,
                   hook=lambda: proxy.add(Rule("PUT", r"/_mapping$", times=100))))
    assert cli.main(["--full", "--no-progress"]) == 0
    after = serving(rebuild)
    assert after != before and len(after) == 1
    alias_equals_table(rebuild)


def test_sigterm_while_the_swap_answer_is_in_flight_keeps_the_new_index(rebuild, proxy, capsys):
    put_items(rebuild.table, items(5))
    assert cli.main(["--full", "--no-progress"]) == 0
    before = serving(rebuild)
    # The cluster applies the swap; SIGTERM arrives before the answer does.
    proxy.add(Rule("POST", r"^/_aliases$", action="call", after=True,
                   hook=lambda: os.kill(os.getpid(), signal.SIGTERM)))
    assert cli.main(["--full", "--no-progress"]) == 130
    after = serving(rebuild)
    assert after != before and len(after) == 1
    assert f"alias {rebuild.alias!r} serves {after[0]}" in capsys.readouterr().out
    alias_equals_table(rebuild)


def test_a_lost_swap_answer_is_checked_not_assumed_failed(rebuild, proxy):
    put_items(rebuild.table, items(5))
    assert cli.main(["--full", "--no-progress"]) == 0
    before = serving(rebuild)
    proxy.add(Rule("POST", r"^/_aliases$", action="drop", after=True))
    assert cli.main(["--full", "--no-progress"]) == 0
    assert serving(rebuild) != before
    assert sorted(rebuild.es.indices.get(index=f"{rebuild.alias}-*").body) == serving(rebuild)
    alias_equals_table(rebuild)


def test_a_paused_replay_never_swaps_onto_its_deleted_build(rebuild, proxy, monkeypatch):
    """Replay A is paused mid-scan past the orphan timeout; replay B deletes A's build as
    orphaned and completes; A resumes: it must neither swap nor delete B's index."""
    put_items(rebuild.table, items(30))
    assert cli.main(["--full", "--no-progress"]) == 0
    real_scan = replay_full.tables.scan_pages
    paused, resume = threading.Event(), threading.Event()
    first = [True]

    def pausing_scan(*args, **kwargs):
        hold = first[0]
        first[0] = False
        for page in real_scan(*args, **kwargs):
            if hold:
                paused.set()
                resume.wait(120)
                hold = False
            yield page

    monkeypatch.setattr(replay_full.tables, "scan_pages", pausing_scan)
    outcome: list[int] = []
    replay_a = threading.Thread(target=lambda: outcome.append(
        cli.main(["--full", "--segments", "1", "--bulk-size", "5", "--no-progress"])))
    replay_a.start()
    try:
        assert paused.wait(120)
        (building,) = [name for name in rebuild.es.indices.get(index=f"{rebuild.alias}-r*").body
                       if name not in serving(rebuild)]
        monkeypatch.setattr(replay_full, "ORPHAN_AFTER_SECONDS", 0.0)  # A looks dead to B
        assert cli.main(["--full", "--segments", "1", "--no-progress"]) == 0
        b_index = serving(rebuild)
        assert building not in b_index
    finally:
        resume.set()
        replay_a.join(300)
    assert outcome == [1]  # A failed: its build was gone
    assert serving(rebuild) == b_index
    assert not rebuild.es.indices.exists(index=building)  # no stray re-created index left
    alias_equals_table(rebuild)


@pytest.mark.skipif(os.environ.get("SEARCH_BACKEND") == "opensearch",
                    reason="OpenSearch applies the add and ignores the missing remove without an error entry")
def test_update_aliases_raises_when_an_action_fails_inside_a_200(rebuild, proxy):
    from indexer.backends import store_for
    from indexer.errors import ClusterError
    from indexer.settings import Settings

    put_items(rebuild.table, items(1))
    assert cli.main(["--full", "--no-progress"]) == 0
    (index,) = serving(rebuild)
    store = store_for(Settings.from_env())
    with pytest.raises(ClusterError, match="some actions failed"):
        store.update_aliases([{"add": {"index": index, "alias": f"{rebuild.alias}-other"}},
                              {"remove": {"index": index, "alias": f"{rebuild.alias}-missing"}}], 30)


def test_clean_orphans_removes_what_a_dead_replay_left(rebuild, proxy, monkeypatch, capsys):
    put_items(rebuild.table, items(3))
    assert cli.main(["--full", "--no-progress"]) == 0
    orphan = f"{rebuild.alias}-r20200101000000000"
    rebuild.es.indices.create(index=orphan, mappings={"_meta": {replay_full.META_KEY: {
        "state": "building", "host": "elsewhere", "heartbeat": 0}}})
    capsys.readouterr()
    assert cli.main(["--list-orphans", "--clean-orphans"]) == 0
    assert f"removing {orphan}, left by an interrupted replay" in capsys.readouterr().out
    assert not rebuild.es.indices.exists(index=orphan)


def test_an_index_auto_created_by_a_stray_write_is_an_orphan(rebuild, proxy, capsys):
    put_items(rebuild.table, items(3))
    assert cli.main(["--full", "--no-progress"]) == 0
    stray = f"{rebuild.alias}-r20200101000000000"
    rebuild.es.index(index=stray, id="x", document={"pk": "x"}, refresh=True)  # as a bulk create would
    capsys.readouterr()
    assert cli.main(["--list-orphans"]) == 0
    assert f"orphaned (interrupted rebuild): {stray}" in capsys.readouterr().out
    assert cli.main(["--full", "--no-progress"]) == 0
    assert not rebuild.es.indices.exists(index=stray)


def test_a_replay_waits_for_the_live_paths_longer_targets_ttl(rebuild, proxy, monkeypatch, capsys):
    from stream_events import record

    from indexer.layout import META_KEY, TTL_KEY

    keys = {"pk": {"S": "k0"}, "sk": {"N": "0"}}
    put_items(rebuild.table, items(1))
    rebuild.configure(TARGETS_TTL_SECONDS="2")  # the deployed function's setting
    rebuild.deliver(record("INSERT", keys, {**keys, "v": {"N": "0"}}, 1))  # it creates the index
    monkeypatch.setenv("TARGETS_TTL_SECONDS", "0.5")  # the operator's shell
    capsys.readouterr()
    assert cli.main(["--full", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "TARGETS_TTL_SECONDS here is 0.5s but the live path was told 2s" in out
    assert "waiting 3s for live writers" in out
    (index,) = serving(rebuild)
    meta = rebuild.es.indices.get(index=index)[index]["mappings"]["_meta"][META_KEY]
    assert meta[TTL_KEY] == 2.0  # the next replay waits as long, whatever its shell says
