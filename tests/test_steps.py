"""The Step Functions engine's Lambdas run in this process in the order the state machine runs
them (prepare, plan, the worker looping on continuations, finish or abandon), against the real
Elasticsearch and moto."""

from __future__ import annotations

import json
import os

import boto3
import pytest

import export_layout
import map_results
from conftest import LambdaContext
from indexer.errors import ReplayAborted
from indexer.layout import META_KEY, TTL_KEY
from replay import full as replay_full
from replay import steps, worker
from replay.mapresults import RESULTS_PREFIX
from tables import put_items
from test_replay import alias_equals_table, rebuild  # noqa: F401  (a fixture)

BUCKET = "rebuild-work"


def meta_of(sync, index: str) -> dict:
    return sync.es.indices.get(index=index).body[index]["mappings"]["_meta"][META_KEY]


@pytest.fixture
def deployed(rebuild, monkeypatch):
    export_layout.patch(monkeypatch.setattr)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("REBUILD_BUCKET", BUCKET)
    monkeypatch.setattr(worker, "LAMBDA_MARGIN_SECONDS", 59.0)  # 1 s slices: continuations happen
    monkeypatch.setattr(steps, "EXPORT_POLL_SECONDS", 0)
    return rebuild


def load_all(build: dict, planned: dict, invoke=None) -> dict:
    """What the Distributed Map does: each unit of the units file, looping on its continuation,
    its totals written where ResultWriter writes them (tests/map_results.py); the Map's output.
    ``invoke(event)`` stands for the worker Lambda (default: its handler with 60 s to run)."""
    invoke = invoke or (lambda event: worker.handler(event, LambdaContext(60)))
    units = json.loads(boto3.client("s3").get_object(Bucket=planned["units_bucket"],
                                                     Key=planned["units_key"])["Body"].read())
    loaded = []
    for unit in units:
        event = {"unit": unit, "build": build, "totals": {"read": 0, "created": 0, "stale": 0, "refused": 0}}
        while event["unit"] is not None:
            event = invoke(event)
        loaded.append(event["totals"])
    return map_results.write(boto3.client("s3"), planned["units_bucket"], RESULTS_PREFIX, loaded)


def test_a_scan_rebuild_through_the_lambdas_swaps_to_an_index_equal_to_the_table(deployed):
    put_items(deployed.table, [{"pk": {"S": f"k{n}"}, "sk": {"N": str(n)}} for n in range(60)])
    build = steps.handler({"step": "prepare", "request": {"source": "scan", "segments": 3, "bulk_size": 7},
                           "execution": "arn:aws:states:us-east-1:123456789012:execution:rebuild:one"}, None)
    planned = steps.handler({"step": "plan", "build": build, "plan": {}}, None)
    assert planned["ready"] and planned["units"] == 3
    loaded = load_all(build, planned)
    report = steps.handler({"step": "finish", "build": build, "plan": planned, "loaded": loaded}, None)
    assert report["read"] == 60 and report["index"] == build["index"]
    assert list(deployed.es.indices.get_alias(name=deployed.alias).body) == [build["index"]]
    alias_equals_table(deployed)
    meta = meta_of(deployed, build["index"])  # marking it complete kept what the live path reads
    assert meta["state"] == "complete" and meta["run"] == build["run"] and meta[TTL_KEY] > 0
    assert meta["snapshot_started"] >= meta["started"]


def test_an_export_rebuild_polls_the_export_then_loads_its_files(deployed):
    boto3.client("dynamodb").update_continuous_backups(
        TableName=deployed.table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    put_items(deployed.table, [{"pk": {"S": f"e{n}"}, "sk": {"N": "0"}} for n in range(120)])
    build = steps.handler({"step": "prepare", "request": {"source": "export", "export_bucket": BUCKET,
                                                          "export_prefix": "x"}, "execution": ""}, None)
    planned = steps.handler({"step": "plan", "build": build, "plan": {}}, None)
    assert planned["ready"] is False and planned["export_arn"]
    while not planned["ready"]:
        planned = steps.handler({"step": "plan", "build": build, "plan": planned}, None)
    assert (planned["units"], planned["expected"]) == (3, 120)
    loaded = load_all(build, planned)
    steps.handler({"step": "finish", "build": build, "plan": planned, "loaded": loaded}, None)
    alias_equals_table(deployed)
    meta = meta_of(deployed, build["index"])
    assert meta["snapshot_started"] > meta["started"]  # the export's time, not the creation's


def test_finish_refuses_a_build_deleted_and_re_created_under_its_name(deployed):
    put_items(deployed.table, [{"pk": {"S": "a"}, "sk": {"N": "1"}}])
    build = steps.handler({"step": "prepare", "request": {"segments": 1}, "execution": ""}, None)
    planned = steps.handler({"step": "plan", "build": build, "plan": {}}, None)
    loaded = load_all(build, planned)
    deployed.es.indices.delete(index=build["index"])  # another run took it for orphaned
    deployed.es.index(index=build["index"], id="x", document={"pk": "x"}, refresh=True)  # a stray write
    with pytest.raises(ReplayAborted, match="no longer the index this replay built"):
        steps.handler({"step": "finish", "build": build, "plan": planned, "loaded": loaded}, None)
    assert not deployed.es.indices.exists_alias(name=deployed.alias)


def test_abandon_after_the_swap_keeps_the_new_index_serving(deployed):
    put_items(deployed.table, [{"pk": {"S": "a"}, "sk": {"N": "1"}}])
    build = steps.handler({"step": "prepare", "request": {"segments": 1}, "execution": ""}, None)
    planned = steps.handler({"step": "plan", "build": build, "plan": {}}, None)
    steps.handler({"step": "finish", "build": build, "plan": planned, "loaded": load_all(build, planned)}, None)
    steps.handler({"step": "abandon", "build": build, "error": {"Error": "States.Timeout"}}, None)
    assert list(deployed.es.indices.get_alias(name=deployed.alias).body) == [build["index"]]
    alias_equals_table(deployed)


def test_abandon_drops_the_build_and_the_alias_stays(deployed):
    put_items(deployed.table, [{"pk": {"S": "a"}, "sk": {"N": "1"}}])
    build = steps.handler({"step": "prepare", "request": {}, "execution": ""}, None)
    steps.handler({"step": "abandon", "build": build, "error": {"Error": "States.TaskFailed"}}, None)
    assert not deployed.es.indices.exists(index=build["index"])


def test_a_build_is_alive_while_its_execution_runs_and_an_orphan_once_it_is_gone(deployed):
    sfn = boto3.client("stepfunctions")
    role = boto3.client("iam").create_role(RoleName="rebuild", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    machine = sfn.create_state_machine(name="rebuild", roleArn=role, definition=json.dumps(
        {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 3600, "End": True}}}))["stateMachineArn"]
    running = sfn.start_execution(stateMachineArn=machine)["executionArn"]
    alive = steps.handler({"step": "prepare", "request": {}, "execution": running}, None)
    w = replay_full.wire(dict(os.environ))
    assert alive["index"] in replay_full.existing(w).running
    sfn.stop_execution(executionArn=running)
    gone = replay_full.existing(w)
    assert alive["index"] in gone.orphans


def test_an_export_without_a_bucket_goes_to_the_rebuild_bucket_where_the_roles_may_write_it(deployed):
    boto3.client("dynamodb").update_continuous_backups(
        TableName=deployed.table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    build = steps.handler({"step": "prepare", "request": {"source": "export"}, "execution": ""}, None)
    assert (build["export_bucket"], build["export_prefix"]) == (BUCKET, steps.EXPORT_PREFIX)
    steps.handler({"step": "abandon", "build": build, "error": None}, None)
    other = steps.handler({"step": "prepare", "request": {"source": "export", "export_bucket": "theirs"},
                           "execution": ""}, None)
    assert (other["export_bucket"], other["export_prefix"]) == ("theirs", None)


KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def _exports_requested(monkeypatch) -> list[dict]:
    """The ExportTableToPointInTime requests the steps send, as botocore sends them."""
    from botocore.client import BaseClient

    requested: list[dict] = []
    call = BaseClient._make_api_call

    def recording(self, operation, params):
        if operation == "ExportTableToPointInTime":
            requested.append(dict(params))
        return call(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording)
    return requested


def test_exports_are_encrypted_with_the_deployed_key_unless_the_request_names_another(deployed, monkeypatch):
    """REBUILD_EXPORT_KMS_KEY (param rebuildExportKmsKeyArn, the key the deployed roles may use)
    reaches ExportTableToPointInTime as SSE-KMS when the CLI gave no --export-kms-key."""
    boto3.client("dynamodb").update_continuous_backups(
        TableName=deployed.table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    requested = _exports_requested(monkeypatch)
    monkeypatch.setenv("REBUILD_EXPORT_KMS_KEY", KEY)
    other = KEY.replace("1234abcd", "5678efab")
    for request, key in (({"source": "export"}, KEY), ({"source": "export", "export_kms_key": other}, other)):
        build = steps.handler({"step": "prepare", "request": request, "execution": ""}, None)
        assert build["export_kms_key"] == key
        steps.handler({"step": "plan", "build": build, "plan": {}}, None)
        assert (requested[-1]["S3SseAlgorithm"], requested[-1]["S3SseKmsKeyId"]) == ("KMS", key)
        steps.handler({"step": "abandon", "build": build, "error": None}, None)
    # Deployed without a key (the variable empty): SSE-S3, no key named.
    monkeypatch.setenv("REBUILD_EXPORT_KMS_KEY", "")
    build = steps.handler({"step": "prepare", "request": {"source": "export"}, "execution": ""}, None)
    steps.handler({"step": "plan", "build": build, "plan": {}}, None)
    assert build["export_kms_key"] is None
    assert not {"S3SseAlgorithm", "S3SseKmsKeyId"} & set(requested[-1])
    assert len(requested) == 3


def test_finish_refuses_a_map_run_with_a_failed_unit_and_leaves_the_alias(deployed):
    put_items(deployed.table, [{"pk": {"S": "a"}, "sk": {"N": "1"}}])
    build = steps.handler({"step": "prepare", "request": {"segments": 2}, "execution": ""}, None)
    planned = steps.handler({"step": "plan", "build": build, "plan": {}}, None)
    loaded = map_results.write(boto3.client("s3"), BUCKET, RESULTS_PREFIX,
                               [{"read": 1, "created": 1, "stale": 0, "refused": 0}], failed=1)
    with pytest.raises(ReplayAborted, match="the map run has failed units"):
        steps.handler({"step": "finish", "build": build, "plan": planned, "loaded": loaded}, None)
    assert not deployed.es.indices.exists_alias(name=deployed.alias)
