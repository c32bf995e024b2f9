"""``python -m replay --full`` and ``--verify`` against the real Elasticsearch and moto."""

from __future__ import annotations

import json
import os

import boto3
import pytest

from indexer import convert
from indexer.ids import document_id
from cluster import Cluster
from indexer.cliutil import EXIT_CLUSTER, EXIT_USAGE
from replay import cli
from replay.verify import canonical
from replay import full as replay_full
from tables import StreamFollower, create_table, every_type_item, live_writes, put_items, scan_all

pytestmark = pytest.mark.es


@pytest.fixture
def rebuild(sync, monkeypatch, tmp_path):
    """A table of the test's own, and the alias of the `sync` fixture to rebuild into."""
    table = f"T{sync.alias.replace('-', '')}"
    create_table(table)
    monkeypatch.setenv("TABLE_NAME", table)
    monkeypatch.setenv("TARGETS_TTL_SECONDS", "0.5")
    sync.configure()  # the live handler reads the new TTL too
    sync.table = table
    sync.es_url = os.environ["ELASTICSEARCH_URL"]
    return sync


def alias_equals_table(sync) -> None:
    """Every item, digit for digit, and nothing else (compared in verify's canonical form)."""
    expected = {
        document_id({"pk": item["pk"], "sk": item["sk"]}): canonical(convert.item(item))
        for item in scan_all(sync.table)
    }
    exact = Cluster(sync.es_url, exact=True)
    exact.indices.refresh(index=sync.alias)
    hits = exact.search(index=sync.alias, size=10_000)["hits"]["hits"]
    shown = {hit["_id"]: canonical({k: v for k, v in hit["_source"].items() if k != "_ddb"}) for hit in hits}
    assert shown.keys() == expected.keys()
    for doc_id in expected:
        assert shown[doc_id] == expected[doc_id], doc_id


def serving(sync) -> list[str]:
    return sorted(sync.es.indices.get_alias(name=sync.alias).body)


def test_replay_of_every_type_and_composite_keys_makes_the_alias_equal_the_table(rebuild, capsys):
    put_items(rebuild.table, [every_type_item(f"item|{n}#", n) for n in range(40)])
    assert cli.main(["--full", "--segments", "3", "--bulk-size", "7", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "scanned 40 items" in out and "40 written" in out
    alias_equals_table(rebuild)
    doc = rebuild.docs()[document_id({"pk": {"S": "item|3#"}, "sk": {"N": "3"}})]
    assert doc["b"] == "AAH/" and doc["bs"] == ["AQ==", "/w=="] and doc["ns"] == [1.5, 3]
    assert doc["n"] == 12345678901234567890123456789012345678


def test_a_second_replay_swaps_atomically_and_drops_the_old_index(rebuild, capsys):
    put_items(rebuild.table, [every_type_item("a", n) for n in range(5)])
    assert cli.main(["--full", "--no-progress"]) == 0
    first = serving(rebuild)
    assert cli.main(["--full", "--no-progress"]) == 0
    second = serving(rebuild)
    assert first != second and len(second) == 1
    assert not rebuild.es.indices.exists(index=first[0])
    assert cli.main(["--full", "--keep-old", "--no-progress"]) == 0
    assert rebuild.es.indices.exists(index=second[0])
    alias_equals_table(rebuild)


def test_a_mapping_file_is_applied_to_the_new_index(rebuild, tmp_path):
    put_items(rebuild.table, [{"pk": {"S": "a"}, "sk": {"N": "1"}, "mixed": {"L": [{"N": "1"}, {"S": "two"}]}}])
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"mappings": {"properties": {"mixed": {"type": "object", "enabled": False}}}}))
    assert cli.main(["--full", "--mapping", str(mapping), "--no-progress"]) == 0
    assert rebuild.docs()["a|1"]["mixed"] == [1, "two"]


def test_replay_while_writers_and_live_sync_run_ends_equal_to_the_table(rebuild, monkeypatch):
    for seed in (1, 2, 3):
        put_items(rebuild.table, [{"pk": {"S": f"k{n}"}, "sk": {"N": "0"}, "v": {"N": "0"}} for n in range(60)])
        with live_writes(rebuild.table, seed, keys=80) as follower:
            assert cli.main(["--full", "--segments", "2", "--bulk-size", "10", "--no-progress"]) == 0
        assert follower.failures == []
        alias_equals_table(rebuild)


def test_a_delete_between_the_scan_reading_an_item_and_writing_it_wins(rebuild, monkeypatch):
    put_items(rebuild.table, [{"pk": {"S": f"k{n}"}, "sk": {"N": "0"}} for n in range(5)])
    follower = StreamFollower(rebuild.table)
    follower.drain()
    real_scan = replay_full.tables.scan_pages

    def scan_then_delete(*args, **kwargs):
        for page, last in real_scan(*args, **kwargs):
            # The scan has read k2; before its document is written, the item is deleted and
            # the live path applies the delete to both indices.
            boto3.client("dynamodb").delete_item(TableName=rebuild.table, Key={"pk": {"S": "k2"}, "sk": {"N": "0"}})
            follower.drain()
            assert any(item["pk"]["S"] == "k2" for item in page) or not page
            yield page, last

    monkeypatch.setattr(replay_full.tables, "scan_pages", scan_then_delete)
    assert cli.main(["--full", "--segments", "1", "--no-progress"]) == 0
    assert "k2|0" not in rebuild.docs()
    alias_equals_table(rebuild)


def test_verify_finds_planted_drift_and_fix_repairs_it(rebuild, capsys):
    put_items(rebuild.table, [{"pk": {"S": f"k{n}"}, "sk": {"N": str(n)}, "v": {"S": "ok"}} for n in range(10)])
    assert cli.main(["--full", "--no-progress"]) == 0
    assert cli.main(["--verify", "--no-progress"]) == 0
    (index,) = serving(rebuild)
    rebuild.es.delete(index=index, id="k1|1", refresh=True)  # missing
    stale = rebuild.es.get(index=index, id="k2|2")["_source"]
    rebuild.es.index(index=index, id="k2|2", document={**stale, "v": "stale"}, refresh=True)  # differing
    rebuild.es.index(index=index, id="ghost|0", document={"pk": "ghost", "sk": 0, "_ddb": {"seq": "0" * 40}},
                     refresh=True)  # extra
    capsys.readouterr()
    assert cli.main(["--verify", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "missing from the index: 1" in out and "  missing: k1|1" in out
    assert "differing from the table: 1" in out and "  differing: k2|2" in out
    assert "in the index but not the table: 1" in out and "  extra: ghost|0" in out
    assert cli.main(["--verify", "--fix", "--no-progress"]) == 0
    assert cli.main(["--verify", "--no-progress"]) == 0
    alias_equals_table(rebuild)


def test_a_concrete_index_under_the_alias_name_needs_migrate(rebuild, capsys):
    put_items(rebuild.table, [{"pk": {"S": "a"}, "sk": {"N": "1"}}])
    rebuild.es.indices.create(index=rebuild.alias)
    assert cli.main(["--full", "--no-progress"]) == 2
    assert "--migrate" in capsys.readouterr().err
    assert cli.main(["--full", "--migrate", "--no-progress"]) == 0
    assert list(rebuild.es.indices.get_alias(name=rebuild.alias).body) != [rebuild.alias]
    assert set(rebuild.docs()) == {"a|1"}


def test_a_table_without_a_stream_is_rebuilt_with_a_warning(sync, monkeypatch, capsys):
    create_table("NoStream", stream=False)
    put_items("NoStream", [{"pk": {"S": "a"}, "sk": {"N": "1"}}])
    monkeypatch.setenv("TABLE_NAME", "NoStream")
    monkeypatch.setenv("TARGETS_TTL_SECONDS", "0.5")
    assert cli.main(["--full", "--no-progress"]) == 0
    assert "has no stream: live sync cannot follow it" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--full"], {"TABLE_NAME": "Missing"}, "table 'Missing' does not exist"),
        (["--full"], {"TABLE_NAME": None}, "TABLE_NAME is required"),
        (["--full", "--mapping", "tests/data/no-such-mapping.json"], {}, "--mapping: cannot read"),
    ],
)
def test_bad_settings_fail_with_one_line_and_exit_2(rebuild, monkeypatch, capsys, argv, env, message):
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert cli.main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.parametrize("mode", ["--full", "--verify", "--list-orphans"])
def test_an_unreachable_cluster_is_one_line_and_its_own_exit_code(rebuild, monkeypatch, capsys, mode):
    monkeypatch.setenv("ELASTICSEARCH_URL", "http://127.0.0.1:9")
    assert cli.main([mode, "--no-progress"]) == EXIT_CLUSTER != EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach the search cluster at http://127.0.0.1:9" in err[0]


@pytest.mark.parametrize("argv", [["--full", "--segments", "0"], ["--full", "--verify"], [], ["--full", "--bogus"],
                                  ["--full", "--fix"], ["--verify", "--keep-old"], ["--redrive", "--segments", "2"],
                                  ["--list-orphans", "--dry-run"], ["--full", "--max-attempts", "3"]])
def test_bad_flags_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_verify_judges_visibility_as_the_alias_filter_does(rebuild, capsys):
    put_items(rebuild.table, [{"pk": {"S": "k"}, "sk": {"N": "1"}, "v": {"S": "ok"}}])
    assert cli.main(["--full", "--no-progress"]) == 0
    (index,) = serving(rebuild)
    shown = rebuild.es.get(index=index, id="k|1")["_source"]
    # Written by an older version: a dotted name that the alias filter reads as the tombstone flag.
    rebuild.es.index(index=index, id="k|1", document={**shown, "_ddb.deleted": "true"}, refresh=True)
    assert "k|1" not in rebuild.docs()
    capsys.readouterr()
    assert cli.main(["--verify", "--no-progress"]) == 1
    assert "  missing: k|1" in capsys.readouterr().out


def test_a_document_under_a_foreign_id_is_extra_whatever_it_claims(rebuild, capsys):
    put_items(rebuild.table, [{"pk": {"S": f"k{n}"}, "sk": {"N": str(n)}, "v": {"S": "ok"}} for n in range(3)])
    assert cli.main(["--full", "--no-progress"]) == 0
    (index,) = serving(rebuild)
    real = rebuild.es.get(index=index, id="k1|1")["_source"]
    rebuild.es.index(index=index, id="copy-of-k1", document=real, refresh=True)  # identical content
    rebuild.es.index(index=index, id="other", document={**real, "v": "changed"}, refresh=True)  # differing
    capsys.readouterr()
    assert cli.main(["--verify", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "in the index but not the table: 2" in out and "differing from the table: 0" in out
    assert cli.main(["--verify", "--fix", "--no-progress"]) == 0
    assert cli.main(["--verify", "--no-progress"]) == 0
    assert "copy-of-k1" not in rebuild.docs() and "other" not in rebuild.docs()
    alias_equals_table(rebuild)


def test_a_repair_never_makes_the_next_real_record_look_stale(rebuild):
    from stream_events import SEQUENCE_BASE, record

    keys = {"pk": {"S": "k"}, "sk": {"N": "0"}}
    put_items(rebuild.table, [{**keys, "v": {"S": "one"}}])
    # The index holds an image at sequence S that differs from the table (drift to repair).
    rebuild.deliver(record("MODIFY", keys, {**keys, "v": {"S": "drifted"}}, 5))
    assert cli.main(["--verify", "--fix", "--no-progress"]) == 0
    assert rebuild.docs()["k|0"]["v"] == "one"
    # The next real change gets S + 1: it must win over the repair.
    put_items(rebuild.table, [{**keys, "v": {"S": "two"}}])
    assert rebuild.deliver(record("MODIFY", keys, {**keys, "v": {"S": "two"}}, 6)) == {"batchItemFailures": []}
    assert rebuild.docs()["k|0"]["v"] == "two"
    # A late duplicate of the drifted record loses.
    rebuild.deliver(record("MODIFY", keys, {**keys, "v": {"S": "drifted"}}, 5))
    alias_equals_table(rebuild)


def _at(record: dict, seconds: float) -> dict:
    record["dynamodb"]["ApproximateCreationDateTime"] = seconds
    return record


def _of(sync, record: dict) -> dict:
    """``record`` as the stream of the test's own table delivers it (its ARN names the table)."""
    record["eventSourceARN"] = f"arn:aws:dynamodb:us-east-1:123456789012:table/{sync.table}/stream/2026-12-03T00:00:00.000"
    return record


def test_an_old_record_delivered_again_after_a_replay_loses_to_the_snapshot(rebuild):
    import time as clock

    from stream_events import record

    keys = {"pk": {"S": "k"}, "sk": {"N": "0"}}
    gone = {"pk": {"S": "gone"}, "sk": {"N": "0"}}
    put_items(rebuild.table, [{**keys, "v": {"S": "now"}}])
    hour_ago = clock.time() - 3600
    old_modify = _at(_of(rebuild, record("MODIFY", keys, {**keys, "v": {"S": "an hour ago"}}, 5)), hour_ago)
    old_insert = _at(_of(rebuild, record("INSERT", gone, {**gone, "v": {"S": "deleted before the replay"}}, 6)), hour_ago)
    assert cli.main(["--full", "--no-progress"]) == 0
    rebuild.configure()  # a new container: it reads the rebuilt index's scan start
    # Out of order, after the replay: duplicates of records older than the scan.
    assert rebuild.deliver(old_modify, old_insert) == {"batchItemFailures": []}
    assert rebuild.docs() == {"k|0": {"pk": "k", "sk": 0, "v": "now"}}
    # A change after the scan still wins over the snapshot.
    put_items(rebuild.table, [{**keys, "v": {"S": "later"}}])
    assert rebuild.deliver(_at(_of(rebuild, record("MODIFY", keys, {**keys, "v": {"S": "later"}}, 7)), clock.time())) == {
        "batchItemFailures": []}
    alias_equals_table(rebuild)
