"""``--source export`` and the units of work, against the real Elasticsearch and moto.

moto's export is completed to AWS's documented layout by tests/export_layout.py (see there); the
product is tested against that layout only.
"""

from __future__ import annotations

import base64
import gc
import gzip
import hashlib
import json
import threading

import boto3
import pytest

import export_layout
from indexer.apply import RetryPolicy
from indexer.backends import store_for
from indexer.errors import ExportError, ReplayAborted, RetryableError, SettingsError
from indexer.layout import META_KEY, index_body
from indexer.settings import Settings
from replay import cli
from replay import export as exports
from replay import table as tables
from replay.units import ExportUnit, ScanUnit, done_from_wire, done_to_wire, unit_from_wire, unit_to_wire
from replay import worker as worker_module
from replay.worker import YOUNG_COLLECTION_THRESHOLD, SharedBackoff, Target, Worker
from tables import every_type_item, live_writes, put_items
from test_replay import alias_equals_table, rebuild  # noqa: F401  (a fixture)

BUCKET = "exports"
#: How long a test waits for the condition it is about; reached in milliseconds when it holds.
PATIENCE = 30.0


# --- the layout, pure -------------------------------------------------------------------------

def objects_for(items: list[dict], fmt: str = "DYNAMODB_JSON") -> dict[str, bytes]:
    lines = [json.dumps({"Item": item}) for item in items]
    return export_layout.layout(lines, "arn:aws:dynamodb:us-east-1:1:table/T/export/0123-ab", "arn:t", BUCKET, "p",
                                fmt=fmt)


def only(objects: dict[str, bytes], suffix: str) -> tuple[str, bytes]:
    return next((key, body) for key, body in objects.items() if key.endswith(suffix))


def test_the_manifest_lists_every_data_file_with_its_count_and_checksum():
    objects = objects_for([{"pk": {"S": f"k{n}"}} for n in range(120)])
    key, body = only(objects, "manifest-summary.json")
    summary = exports.summary_of(body, key)
    units = exports.units_of(objects[summary["manifestFilesS3Key"]], BUCKET, summary["manifestFilesS3Key"])
    assert [unit.item_count for unit in units] == [50, 50, 20]
    assert all(unit.key in objects and unit.key.endswith(".json.gz") for unit in units)
    items = [item for unit in units for item in exports.items_of(objects[unit.key], unit)]
    assert [item["pk"]["S"] for item in items] == [f"k{n}" for n in range(120)]


def test_an_ion_export_is_refused_with_a_clear_message():
    key, body = only(objects_for([{"pk": {"S": "a"}}], fmt="ION"), "manifest-summary.json")
    with pytest.raises(ExportError, match="ION format; only DYNAMODB_JSON"):
        exports.summary_of(body, key)


def test_a_data_file_that_does_not_match_its_checksum_or_count_is_refused():
    objects = objects_for([{"pk": {"S": f"k{n}"}} for n in range(3)])
    key, body = only(objects, ".json.gz")
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    with pytest.raises(ExportError, match="does not match the manifest"):
        list(exports.items_of(body, ExportUnit(BUCKET, key, 3, base64.b64encode(b"x" * 16).decode())))
    with pytest.raises(ExportError, match="holds 3 items, the manifest says 4"):
        list(exports.items_of(body, ExportUnit(BUCKET, key, 4, md5)))
    garbled = gzip.compress(b'{"NotItem": 1}\n')
    with pytest.raises(ExportError, match="line 1 is not"):
        list(exports.items_of(garbled, ExportUnit(BUCKET, key, 1, base64.b64encode(hashlib.md5(garbled).digest()).decode())))


def test_a_manifest_line_without_its_fields_is_refused():
    with pytest.raises(ExportError, match="line 2 is not a data file entry"):
        exports.units_of(b'{"itemCount": 1, "md5Checksum": "x", "dataFileS3Key": "k"}\n{"itemCount": 2}\n', BUCKET, "m")


def test_units_and_results_cross_the_wire_unchanged_and_malformed_units_are_refused():
    for unit in (ScanUnit(1, 4, {"pk": {"S": "a"}}), ExportUnit(BUCKET, "k", 9, "m", skip=3)):
        assert unit_from_wire(json.loads(json.dumps(unit_to_wire(unit)))) == unit
    for bad in ([], {"kind": "scan", "segment": 4, "segments": 4}, {"kind": "export"}, {"kind": "tape"}):
        with pytest.raises(SettingsError):
            unit_from_wire(bad)
    from replay.units import Done

    done = Done(3, 2, 1, [("k", "why")], ScanUnit(0, 1, {"pk": {"S": "z"}}))
    assert done_from_wire(json.loads(json.dumps(done_to_wire(done)))) == done


def test_one_workers_backoff_holds_every_worker():
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    first = SharedBackoff(clock=lambda: now[0], sleep=sleep)
    second = SharedBackoff(first.until, clock=lambda: now[0], sleep=sleep)
    second.wait()
    assert slept == []
    first.backoff(2.0)  # a 429 seen by the first worker
    now[0] -= 1.5  # the second one looks while that backoff is still running
    second.wait()
    assert slept == [2.0, 1.5]


# --- the worker on each kind of unit, real Elasticsearch and moto ------------------------------

@pytest.fixture
def exported(rebuild, monkeypatch):
    """The rebuild fixture's table with point-in-time recovery, a bucket, and moto's export
    completed to AWS's layout."""
    export_layout.patch(monkeypatch.setattr)
    boto3.client("dynamodb").update_continuous_backups(
        TableName=rebuild.table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return rebuild


def worker_for(sync, index: str, bulk_size: int = 10) -> Worker:
    settings = Settings.from_env()
    sync.es.indices.create(index=index, **index_body())
    table = tables.describe(boto3.client("dynamodb"), sync.table)
    return Worker(Target(index, sync.alias, table, bulk_size=bulk_size), store_for(settings),
                  boto3.client("dynamodb"), boto3.client("s3"), RetryPolicy())


def export_units(table: str) -> list[ExportUnit]:
    dynamodb = boto3.client("dynamodb")
    arn = dynamodb.describe_table(TableName=table)["Table"]["TableArn"]
    started = exports.start(dynamodb, arn, BUCKET, "x", None)
    completed = exports.wait(dynamodb, started["ExportArn"], threading.Event(), poll=0.1)
    units, summary = exports.plan(boto3.client("s3"), completed)
    assert summary["itemCount"] == sum(unit.item_count for unit in units)
    return units


def count(sync, index: str) -> int:
    sync.es.indices.refresh(index=index)
    return sync.es.count(index=index)["count"]


def test_the_worker_loads_an_export_file_resumes_from_its_continuation_and_is_idempotent(exported):
    put_items(exported.table, [every_type_item(f"e{n}", n) for n in range(70)])
    units = export_units(exported.table)
    assert [unit.item_count for unit in units] == [50, 20]
    worker = worker_for(exported, f"{exported.alias}-w")
    sliced = worker.run(units[0], budget=0)  # the budget runs out after the first bulk
    assert (sliced.read, sliced.created) == (10, 10) and sliced.continuation == units[0].resumed(10)
    rest = worker.run(sliced.continuation)
    assert (rest.read, rest.created, rest.continuation) == (40, 40, None)
    assert worker.run(units[1]).created == 20
    assert count(exported, f"{exported.alias}-w") == 70
    again = worker.run(units[0])
    assert (again.read, again.created, again.stale) == (50, 0, 50)  # a unit run twice changes nothing
    assert count(exported, f"{exported.alias}-w") == 70


class HeldStore:
    """The real store; each bulk first waits until ``released`` is set (or PATIENCE passes),
    notes whether it was, and the collector's young threshold; ``fail`` makes bulks refused."""

    def __init__(self, real) -> None:
        self._real = real
        self.released = threading.Event()
        self.waited: list[bool] = []
        self.thresholds: list[int] = []
        self.fail = False

    def __getattr__(self, name):
        return getattr(self._real, name)

    def bulk(self, body, timeout):
        self.waited.append(self.released.wait(PATIENCE))
        self.thresholds.append(gc.get_threshold()[0])
        if self.fail:
            raise RetryableError("bulk write: the cluster answered 503")
        return self._real.bulk(body, timeout)


def test_the_worker_converts_the_next_bulk_while_the_last_is_written(exported, monkeypatch):
    put_items(exported.table, [every_type_item(f"p{n}", n) for n in range(30)])
    (unit,) = export_units(exported.table)
    worker = worker_for(exported, f"{exported.alias}-p")
    worker.store = held = HeldStore(worker.store)
    convert = worker_module.snapshot_changes
    conversions: list[int] = []

    def snapshot_changes(alias, table, items):
        conversions.append(len(items))
        if len(conversions) == 2:  # the second bulk converting: the first is being written
            held.released.set()
        return convert(alias, table, items)

    monkeypatch.setattr(worker_module, "snapshot_changes", snapshot_changes)
    threshold = gc.get_threshold()
    done = worker.run(unit)
    assert held.waited == [True, True, True]  # the first write waited for the second conversion
    assert conversions == [10, 10, 10]
    assert (done.read, done.created, done.continuation) == (30, 30, None)
    assert count(exported, f"{exported.alias}-p") == 30
    # Young collections spaced out while the unit loaded, as they were after it.
    assert set(held.thresholds) == {max(YOUNG_COLLECTION_THRESHOLD, threshold[0])}
    assert gc.get_threshold() == threshold


def test_a_bulk_that_fails_while_the_next_converts_stops_the_unit_and_a_rerun_converges(exported):
    put_items(exported.table, [every_type_item(f"f{n}", n) for n in range(30)])
    (unit,) = export_units(exported.table)
    worker = worker_for(exported, f"{exported.alias}-f")
    policy = RetryPolicy(max_attempts=2, initial_wait=0.0, jitter=0.0)
    worker.policy = policy
    worker.store = held = HeldStore(worker.store)
    held.released.set()
    held.fail = True
    with pytest.raises(ReplayAborted):
        worker.run(unit)
    held.fail = False
    done = worker.run(unit)
    assert (done.read, done.created + done.stale, done.continuation) == (30, 30, None)
    assert count(exported, f"{exported.alias}-f") == 30


def test_the_worker_loads_a_scan_segment_slice_by_slice(exported):
    put_items(exported.table, [{"pk": {"S": f"s{n}"}, "sk": {"N": str(n)}} for n in range(45)])
    worker = worker_for(exported, f"{exported.alias}-s")
    unit, slices, read = ScanUnit(0, 1), 0, 0
    while unit is not None:
        done = worker.run(unit, budget=0)
        read, slices, unit = read + done.read, slices + 1, done.continuation
        assert unit is None or unit.start_key is not None
    assert read == 45 and slices > 1
    assert count(exported, f"{exported.alias}-s") == 45


# --- the command ---------------------------------------------------------------------------------

def test_replay_from_an_export_while_writers_and_live_sync_run_ends_equal_to_the_table(exported, capsys):
    put_items(exported.table, [{"pk": {"S": f"k{n}"}, "sk": {"N": "0"}, "v": {"N": "0"}} for n in range(120)])
    with live_writes(exported.table, seed=7, keys=150) as follower:
        assert cli.main(["--full", "--source", "export", "--export-bucket", BUCKET, "--export-prefix", "rebuilds",
                         "--export-poll", "0.1", "--bulk-size", "20", "--no-progress"]) == 0
    assert follower.failures == []
    out = capsys.readouterr().out
    assert "export complete: " in out and "files" in out
    alias_equals_table(exported)
    (index,) = exported.es.indices.get_alias(name=exported.alias).body
    meta = exported.es.indices.get(index=index).body[index]["mappings"]["_meta"][META_KEY]
    assert meta["snapshot_started"] > meta["started"]  # recorded after the announce, before the export


def test_an_export_without_point_in_time_recovery_says_how_to_enable_it(rebuild, capsys):
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    # --export-prefix: moto requires S3Prefix, which AWS makes optional.
    assert cli.main(["--full", "--source", "export", "--export-bucket", BUCKET, "--export-prefix", "p",
                     "--no-progress"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("{")]  # logs
    assert len(err) == 1 and "point-in-time recovery" in err[0] and "--source scan" in err[0]
    assert "update-continuous-backups" in err[0]
    left = rebuild.es.indices.get(index=f"{rebuild.alias}-r*", ignore_unavailable=True, allow_no_indices=True).body
    assert left == {}  # the half-made index is removed


def test_source_export_needs_a_bucket(capsys):
    assert cli.main(["--full", "--source", "export", "--table", "T"]) == 2
    assert "--export-bucket" in capsys.readouterr().err


def test_the_building_index_has_no_replicas_and_gets_the_mappings_back_before_the_swap(rebuild, monkeypatch,
                                                                                       tmp_path):
    put_items(rebuild.table, [{"pk": {"S": f"k{n}"}, "sk": {"N": "0"}} for n in range(5)])
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"settings": {"number_of_replicas": 2, "refresh_interval": "7s"}}))
    seen: list[dict] = []
    real_scan = tables.scan_pages

    def scan_and_look(*args, **kwargs):
        for page, last in real_scan(*args, **kwargs):
            building = rebuild.es.indices.get(index=f"{rebuild.alias}-r*").body
            seen.extend(body["settings"]["index"] for body in building.values())
            yield page, last

    monkeypatch.setattr(tables, "scan_pages", scan_and_look)
    assert cli.main(["--full", "--mapping", str(mapping), "--no-progress"]) == 0
    assert seen and all(s["number_of_replicas"] == "0" and s["refresh_interval"] == "-1" for s in seen)
    (index,) = rebuild.es.indices.get_alias(name=rebuild.alias).body
    after = rebuild.es.indices.get(index=index).body[index]["settings"]["index"]
    assert (after["number_of_replicas"], after["refresh_interval"]) == ("2", "7s")
