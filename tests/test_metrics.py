"""Metrics, the pure part: the EMF document, the lag from record times with an injected clock,
and the settings that control them. No cluster, no clock of the machine."""

from __future__ import annotations

import json

import pytest

import emf_spec
from stream_events import put, record, remove
from indexer import metrics
from indexer.errors import SettingsError
from indexer.records import change_of, collapse
from indexer.settings import Settings

T0 = 1_795_737_074.0  # epoch seconds


class Ticking:
    """A wall clock that reads ``start`` and then ``step`` seconds more at each call."""

    def __init__(self, start: float, step: float) -> None:
        self.now = start - step
        self.step = step
        self.calls = 0

    def __call__(self) -> float:
        self.now += self.step
        self.calls += 1
        return self.now


def created_at(rec: dict, seconds: float) -> dict:
    rec["dynamodb"]["ApproximateCreationDateTime"] = seconds
    return rec


def handler_document(**figures) -> dict:
    values = {"RecordsReceived": 3, "RecordsIndexed": 2, "BulkLatency": [4.5, 12.0], "ReplicationLag": 850.0}
    values.update(figures)
    return metrics.emf_document(values, metrics.HANDLER_UNITS, "DynamoDBIndexer",
                                metrics.dimensions("things", "prod-indexer"), T0 * 1000)


def test_the_document_follows_the_specification():
    line = metrics.emf_line(handler_document())
    document = emf_spec.check(line)
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    assert document["_aws"]["Timestamp"] == int(T0 * 1000)
    assert directive["Namespace"] == "DynamoDBIndexer"
    assert directive["Dimensions"] == [["Alias", "FunctionName"]]
    assert document["Alias"] == "things" and document["FunctionName"] == "prod-indexer"
    assert {d["Name"]: d["Unit"] for d in directive["Metrics"]} == {
        "RecordsReceived": "Count", "RecordsIndexed": "Count", "BulkLatency": "Milliseconds",
        "ReplicationLag": "Milliseconds"}
    assert document["RecordsIndexed"] == 2 and document["BulkLatency"] == [4.5, 12.0]


def test_the_checker_rejects_a_metric_without_its_value():
    document = handler_document()
    del document["RecordsIndexed"]
    with pytest.raises(AssertionError, match="RecordsIndexed"):
        emf_spec.check(json.dumps(document))


def test_without_a_function_name_the_alias_is_the_only_dimension():
    assert metrics.dimensions("things") == {"Alias": "things"}
    assert metrics.dimensions("things", None, Command="verify") == {"Alias": "things", "Command": "verify"}
    assert metrics.dimensions("   ") == {"Alias": "unknown"}
    assert len(metrics.dimensions("x" * 5000)["Alias"]) == 1024


def test_figures_without_a_unit_are_not_declared():
    document = metrics.emf_document({"RecordsIndexed": 1, "Whatever": 2}, metrics.HANDLER_UNITS, "N",
                                    {"Alias": "a"}, 1)
    assert "Whatever" not in document
    assert [d["Name"] for d in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]] == ["RecordsIndexed"]


def test_the_handler_figures_carry_every_count_and_measure():
    batch = metrics.BatchMetrics(wall=Ticking(T0, 1.0), timer=Ticking(0.0, 0.25))
    sent = batch.bulk_sent()
    batch.bulk_answered(sent, 1234)
    batch.version_conflicts = 2
    counts = {"records": 9, "indexed": 3, "deleted": 1, "stale": 2, "superseded": 1, "dead_lettered": 1, "failed": 1}
    figures = metrics.handler_figures(counts, batch)
    assert figures == {
        "RecordsReceived": 9, "RecordsIndexed": 3, "RecordsDeleted": 1, "RecordsStale": 2,
        "RecordsSuperseded": 1, "RecordsDeadLettered": 1, "RecordsFailed": 1, "VersionConflicts": 2,
        "BulkRequests": 1, "BulkBytes": 1234, "BulkLatency": 250.0,
    }
    assert set(figures) <= set(metrics.HANDLER_UNITS)


def test_bulk_latency_keeps_the_largest_hundred_samples():
    batch = metrics.BatchMetrics(wall=lambda: T0)
    batch.bulk_latency_ms = [float(n) for n in range(250)]
    latency = metrics.handler_figures({}, batch)["BulkLatency"]
    assert len(latency) == 100 and max(latency) == 249.0 and min(latency) == 150.0


def test_lag_runs_from_each_record_to_its_acknowledged_write_and_reports_the_largest():
    wall = Ticking(T0, 2.0)  # started at T0, the bulk answered at T0 + 2 s
    batch = metrics.BatchMetrics(wall=wall)
    records = [created_at(put("a", 1), T0 - 3.0), created_at(put("b", 2), T0 - 0.5)]
    changes = [change_of(r, n, "things") for n, r in enumerate(records)]
    batch.observe_records(records)
    answered = batch.bulk_answered(batch.bulk_sent(), 10)
    for change in changes:
        batch.acknowledged(change.alias, change.doc_id, answered)
    batch.observe_applied(records, changes)
    assert batch.oldest_record_age_ms == 3000.0  # at the start of the batch
    assert batch.replication_lag_ms == 5000.0  # a: created T0 - 3 s, acknowledged T0 + 2 s


def test_a_superseded_record_counts_from_its_own_creation():
    """Collapsing leaves one write for two records; the older one waited longer for it."""
    batch = metrics.BatchMetrics(wall=lambda: T0)
    records = [created_at(put("a", 1), T0 - 10.0), created_at(put("a", 2), T0 - 1.0)]
    latest, _ = collapse([change_of(r, n, "things") for n, r in enumerate(records)])
    batch.acknowledged("things", "a", T0 * 1000)
    batch.observe_applied(records, latest)
    assert batch.replication_lag_ms == 10_000.0


def test_with_dual_writes_the_last_acknowledgement_counts():
    batch = metrics.BatchMetrics(wall=lambda: T0)
    batch.acknowledged("things", "a", 5_000.0)
    batch.acknowledged("things", "a", 7_000.0)
    batch.acknowledged("things", "a", 6_000.0)
    assert batch.acknowledged_ms[("things", "a")] == 7_000.0


def test_records_without_a_time_give_no_lag_and_skew_gives_zero():
    assert metrics.replication_lag_ms([]) is None
    assert metrics.replication_lag_ms([(2_000.0, 1_500.0)]) == 0.0
    assert metrics.oldest_age_ms([{"dynamodb": {}}, "junk", {"dynamodb": {"ApproximateCreationDateTime": "x"}}],
                                 T0) is None
    assert metrics.oldest_age_ms([created_at(remove("a", 1), T0 + 5)], T0 * 1000) == 0.0


def test_moto_s_millisecond_times_are_kept():
    assert metrics.created_ms(created_at(put("a", 1), 1795737074.123)) == pytest.approx(1795737074123.0)


def test_the_alias_is_the_configured_one_or_the_stream_s_table():
    records = [record("INSERT", {"pk": {"S": "a"}}, {"pk": {"S": "a"}})]
    assert metrics.batch_alias(records, "mine") == "mine"
    assert metrics.batch_alias(records, None) == "things"
    assert metrics.batch_alias([], None) == metrics.batch_alias([{"eventSourceARN": 5}], None) == "unknown"


def test_settings_turn_metrics_off_and_name_the_namespace():
    assert Settings.from_env({}).metrics is True
    assert Settings.from_env({}).metrics_namespace == "DynamoDBIndexer"
    assert Settings.from_env({"METRICS": "off"}).metrics is False
    assert Settings.from_env({"METRICS_NAMESPACE": "Shop/Search"}).metrics_namespace == "Shop/Search"
    assert Settings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "prod-indexer"}).function_name == "prod-indexer"


@pytest.mark.parametrize("env, named", [
    ({"METRICS": "sometimes"}, "METRICS must be on or off"),
    ({"METRICS_NAMESPACE": "AWS/Lambda"}, "reserved for AWS"),
    ({"METRICS_NAMESPACE": "has space"}, "METRICS_NAMESPACE"),
    ({"METRICS_NAMESPACE": "x" * 256}, "METRICS_NAMESPACE"),
])
def test_bad_metrics_settings_fail_in_one_line(env, named):
    with pytest.raises(SettingsError, match=named) as caught:
        Settings.from_env(env)
    assert "\n" not in str(caught.value)


# -- local sync's live line ----------------------------------------------------------------------

from indexer.localsync.figures import LiveFigures, Window, figures_line  # noqa: E402


def test_the_live_line_sums_counts_and_keeps_the_worst_lag():
    window = Window()
    window.add({"RecordsReceived": 6, "RecordsIndexed": 4, "RecordsDeleted": 1, "RecordsStale": 1,
                "BulkRequests": 1, "BulkBytes": 4096, "BulkLatency": 12.0, "ReplicationLag": 850.0,
                "OldestRecordAge": 400.0})
    window.add({"RecordsReceived": 4, "RecordsIndexed": 2, "RecordsDeadLettered": 1, "RecordsFailed": 1,
                "VersionConflicts": 2, "BulkRequests": 2, "BulkBytes": 4096, "BulkLatency": [3.0, 40.0],
                "ReplicationLag": 2500.0})
    assert figures_line(window, 5.0) == (
        "metrics, last 5 s: 10 records (2/s) in 2 invocations: 6 indexed, 1 deleted, 1 stale, "
        "1 dead-lettered, 1 failed | replication lag max 2.5 s | oldest record at batch start 400 ms | "
        "bulk 3 requests, 8 KiB, latency p50 12 ms max 40 ms, version conflicts 2")


def test_an_idle_window_says_so():
    assert figures_line(Window(), 5.0) == "metrics, last 5 s: no records"


def test_a_line_is_written_once_the_interval_has_passed():
    now = [100.0]
    lines: list[str] = []
    live = LiveFigures(5.0, lines.append, clock=lambda: now[0])
    live.add({"RecordsReceived": 1})
    now[0] = 104.9
    live.tick()
    assert lines == []
    now[0] = 105.0
    live.tick()
    assert len(lines) == 1 and "1 records" in lines[0]
    live.tick(force=True)  # nothing new since: no line
    assert len(lines) == 1


# -- replay --metrics: the summaries' figures --------------------------------------------------------

from replay import metrics as replay_metrics  # noqa: E402
from replay.full import Rebuilt  # noqa: E402
from replay.redrive.report import Summary as RedriveSummary  # noqa: E402
from replay.verify import Drift, Verified  # noqa: E402


def drift(missing: int, differing: int, extra: int, unconvertible: int) -> Drift:
    return Drift(missing={f"m{n}": {} for n in range(missing)}, differing={f"d{n}": {} for n in range(differing)},
                 extra={f"e{n}": None for n in range(extra)}, unconvertible=[("k", "why")] * unconvertible)


def test_verify_drift_is_missing_plus_differing_plus_extra_and_fix_adds_its_counts():
    found = Verified("things", "Things", drift(2, 1, 3, 4), 10)
    assert replay_metrics.verify_figures(found) == {
        "Drift": 6, "DocumentsMissing": 2, "DocumentsDiffering": 1, "DocumentsExtra": 3, "ItemsUnconvertible": 4}
    fixed = replay_metrics.verify_figures(Verified("things", "Things", drift(2, 1, 3, 0), 10, fixed=(5, 1)))
    assert (fixed["DocumentsFixed"], fixed["DocumentsNotFixed"]) == (5, 1)


def test_redrive_counts_every_outcome_including_those_that_did_not_occur():
    figures = replay_metrics.redrive_figures({"messages": 3, "redriven": 2, "parked": 1, "records_indexed": 4})
    assert figures["MessagesRedriven"] == 2 and figures["MessagesParked"] == 1 and figures["MessagesGone"] == 0
    assert set(figures) == set(replay_metrics.REDRIVE_UNITS)


def test_a_dry_run_redrive_has_no_metrics_line():
    assert replay_metrics.summary_line(RedriveSummary("https://q", dry_run=True), {}) is None


def test_a_command_summary_line_follows_the_specification_on_an_injected_clock():
    rebuilt = Rebuilt(alias="things", index="things-r1", scanned=10, created=9, stale=1, failed=[], seconds=2.5,
                      previous=[], kept_previous=False)
    line = replay_metrics.summary_line(rebuilt, {"METRICS_NAMESPACE": "Shop/Search"}, clock=lambda: T0)
    document = emf_spec.check(line)
    assert document["_aws"]["Timestamp"] == int(T0 * 1000)
    assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Shop/Search"
    assert (document["Alias"], document["Command"], document["ItemsScanned"], document["Duration"]) == (
        "things", "full", 10, 2.5)
    units = {d["Name"]: d["Unit"] for d in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units["Duration"] == "Seconds" and units["ItemsScanned"] == "Count"
