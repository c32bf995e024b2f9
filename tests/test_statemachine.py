"""The Step Functions engine's state machine: valid ASL (cfn-lint) and its control flow executed
by moto's Step Functions interpreter with scripted Lambda results.

What this proves: the states' order, the continuation loop inside the Distributed Map (reading
its units from S3), that a failing iteration routes to Abandon and never reaches Finish (the only
state that swaps), and the export polling loop. What it does not: moto's scripted Lambda cannot
return a FunctionError, so a failing unit is scripted as an answer the loop cannot read (a
States.Runtime failure of the iteration); Retry timings, MaxConcurrency > 1 and redrive of a
failed map run are not emulated.
"""

from __future__ import annotations

import io
import json
import time
import zipfile

import boto3
import pytest

import map_results

from indexer.errors import ReplayAborted
from replay.mapresults import RESULTS_PREFIX, unit_totals
from replay.statemachine import definition, loaded_totals
from replay.units import Done, ScanUnit
from replay.worker import iteration

BUCKET = "rebuild-units"


def test_the_definition_passes_cfn_lints_state_machine_checks(tmp_path):
    from cfnlint.api import ManualArgs, lint_file

    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {"Rebuild": {"Type": "AWS::StepFunctions::StateMachine", "Properties": {
            "RoleArn": "arn:aws:iam::123456789012:role/rebuild",
            "Definition": definition("arn:aws:lambda:us-east-1:123456789012:function:steps",
                                     "arn:aws:lambda:us-east-1:123456789012:function:worker", 40, BUCKET)}}},
    }
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    matches = lint_file(path, ManualArgs(regions=["us-east-1"]))
    assert [str(m) for m in matches] == []


def test_an_iteration_carries_the_continuation_the_build_and_running_totals():
    event = {"unit": {}, "build": {"index": "i"}, "totals": {"read": 5, "created": 4, "stale": 1, "refused": 0}}
    more = iteration(event, Done(3, 2, 0, [("k", "bad")], ScanUnit(0, 2, {"pk": {"S": "x"}})))
    assert more == {"unit": {"segment": 0, "segments": 2, "start_key": {"pk": {"S": "x"}}, "kind": "scan"},
                    "build": {"index": "i"}, "totals": {"read": 8, "created": 6, "stale": 1, "refused": 1,
                                                           "replaced": 0, "read_again": 0}}
    assert iteration(more, Done(1, 1))["unit"] is None


@pytest.fixture
def machine(monkeypatch):
    """moto with Step Functions executing definitions and Lambda answering from a script."""
    from moto import mock_aws

    for name, value in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    # moto's ListMapRuns crashes (AttributeError) on an execution whose interpreter is not running
    # (not started yet, or finished); AWS answers with the map runs it had. Answer "none yet".
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    listed = StepFunctionsParserBackend.list_map_runs

    def list_map_runs(self, execution_arn):
        try:
            return listed(self, execution_arn)
        except AttributeError:
            return {"mapRuns": []}

    monkeypatch.setattr(StepFunctionsParserBackend, "list_map_runs", list_map_runs)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}):
        role = boto3.client("iam").create_role(RoleName="rebuild", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("f.py", "def h(event, context):\n    return event\n")
        arns = [boto3.client("lambda").create_function(FunctionName=name, Runtime="python3.12", Role=role,
                                                       Handler="f.h", Code={"ZipFile": code.getvalue()})["FunctionArn"]
                for name in ("steps", "worker")]
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="units.json",
                      Body=json.dumps([{"kind": "scan", "segment": n, "segments": 2} for n in range(2)]))
        sfn = boto3.client("stepfunctions")
        # MaxConcurrency 1: scripted answers are consumed in one order.
        arn = sfn.create_state_machine(name="rebuild", definition=json.dumps(definition(*arns, 1, BUCKET)),
                                       roleArn=role)["stateMachineArn"]
        yield sfn, arn


def script(*answers) -> None:
    import requests

    for answer in answers:
        body = answer if isinstance(answer, str) else json.dumps(answer)
        requests.post("http://motoapi.amazonaws.com/moto-api/static/lambda-simple/response",
                      json={"results": [body], "region": "us-east-1"}, timeout=10)


def run(sfn, arn) -> tuple[dict, list[str]]:
    execution = sfn.start_execution(stateMachineArn=arn, input=json.dumps({"source": "scan"}))["executionArn"]
    deadline = time.monotonic() + 60
    while (described := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the execution never ended"
        time.sleep(0.05)
    events = sfn.get_execution_history(executionArn=execution, maxResults=1000)["events"]
    entered = [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]
    return described, entered


BUILD = {"index": "a-r1", "alias": "a", "wait_seconds": 0}
READY = {"ready": True, "units_bucket": BUCKET, "units_key": "units.json"}


def totals(read: int) -> dict:
    return {"read": read, "created": read, "stale": 0, "refused": 0}


def test_a_complete_run_loops_on_continuations_then_finishes(machine):
    sfn, arn = machine
    script(BUILD, {"ready": False, "wait_seconds": 0}, READY,
           {"unit": {"kind": "scan", "segment": 0, "segments": 2, "start_key": {"pk": {"S": "m"}}},
            "build": BUILD, "totals": totals(10)},
           {"unit": None, "build": BUILD, "totals": totals(25)},
           {"unit": None, "build": BUILD, "totals": totals(7)},
           {"swapped": True})
    described, entered = run(sfn, arn)
    assert described["status"] == "SUCCEEDED", described
    output = json.loads(described["output"])
    # ResultWriter: the Map's output is where its results are, not the results (moto writes the
    # manifest, with no result files: tests/map_results.py writes those where AWS would).
    written = output["loaded"]["ResultWriterDetails"]
    assert written["Bucket"] == BUCKET and written["Key"].startswith(RESULTS_PREFIX + "/")
    assert written["Key"].endswith("/manifest.json")
    manifest = json.loads(boto3.client("s3").get_object(Bucket=BUCKET, Key=written["Key"])["Body"].read())
    assert manifest["MapRunArn"] == output["loaded"]["MapRunArn"] and set(manifest["ResultFiles"]) == {
        "FAILED", "PENDING", "SUCCEEDED"}
    assert output["finished"]["report"] == {"swapped": True}
    assert entered.count("Plan") == 2 and entered.count("ExportWait") == 1
    assert "Finish" in entered and "Abandon" not in entered


def test_a_failed_map_run_abandons_the_build_and_never_swaps(machine):
    sfn, arn = machine
    # The units file is missing: the map run itself fails (States.ItemReaderFailed).
    script(BUILD, {**READY, "units_key": "missing.json"}, {"abandoned": True})
    described, entered = run(sfn, arn)
    assert described["status"] == "FAILED" and described.get("error") == "RebuildFailed"
    assert "Abandon" in entered and "Finish" not in entered


def test_a_failed_unit_leaves_a_gap_that_finish_refuses_to_swap_over(machine):
    """AWS fails the map run on the first failed item (ToleratedFailureCount 0); moto's emulation
    does not check the tolerance and hands Finish a null for that unit instead. Finish refuses
    any gap either way: the alias only moves when every unit reported its totals."""
    sfn, arn = machine
    script(BUILD, READY, "the worker could not load its unit", {"unit": None, "build": BUILD, "totals": totals(7)},
           "finish echoes")
    described, entered = run(sfn, arn)
    loaded = json.loads(described["output"])["loaded"]
    # What Finish reads: moto's manifest lists no result file, so no unit counts as finished.
    results = unit_totals(boto3.client("s3"), loaded, BUCKET, RESULTS_PREFIX, 2)
    with pytest.raises(ReplayAborted, match="2 of 2 units did not finish"):
        loaded_totals(results, units=2, expected=None)


def test_finish_checks_the_counts_against_the_manifest():
    assert loaded_totals([totals(3), totals(4)], units=2, expected=7).read == 7
    with pytest.raises(ReplayAborted, match="manifest lists 8 items but 7 were read"):
        loaded_totals([totals(3), totals(4)], units=2, expected=8)


def test_the_cli_starts_an_execution_follows_it_and_prints_the_report(machine, capsys):
    from replay import cli

    sfn, arn = machine
    script(BUILD, READY, {"unit": None, "build": BUILD, "totals": totals(4)},
           {"unit": None, "build": BUILD, "totals": totals(5)},
           {"alias": "a", "index": "a-r1", "read": 9, "created": 9, "stale": 0})
    assert cli.main(["--full", "--engine", "stepfunctions", "--state-machine-arn", arn, "--follow-poll", "0.05",
                     "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "started arn:aws:states:" in out
    assert "alias 'a' now serves a-r1" in out and "read 9 items: 9 written" in out


def test_the_cli_reports_a_failed_execution_with_exit_1(machine, capsys):
    from replay import cli

    sfn, arn = machine
    script(BUILD, {**READY, "units_key": "missing.json"}, {"abandoned": True})
    assert cli.main(["--full", "--engine", "stepfunctions", "--state-machine-arn", arn, "--follow-poll", "0.05",
                     "--no-progress"]) == 1
    assert "FAILED" in capsys.readouterr().err


class RunningForever:
    """Step Functions answering that the execution runs and no map run started yet."""

    stopped = False

    def describe_execution(self, executionArn):
        return {"status": "RUNNING"}

    def list_map_runs(self, executionArn):
        return {"mapRuns": []}

    def stop_execution(self, **kwargs):
        self.stopped = True


def test_ctrl_c_detaches_and_leaves_the_execution_running(capsys):
    from replay.progress import Progress
    from replay.stepfunctions import follow

    def interrupted(seconds):
        raise KeyboardInterrupt

    sfn = RunningForever()
    followed = follow(sfn, "arn:x", Progress("t", None, enabled=False), 0.05, sleep=interrupted)
    assert followed.lines() == ["detached; the rebuild goes on in Step Functions: arn:x"]
    assert not sfn.stopped


def test_stepfunctions_engine_needs_the_state_machine(monkeypatch, capsys):
    from replay import cli

    monkeypatch.delenv("REBUILD_STATE_MACHINE_ARN", raising=False)
    assert cli.main(["--full", "--engine", "stepfunctions", "--table", "T"]) == 2
    assert "REBUILD_STATE_MACHINE_ARN" in capsys.readouterr().err


def test_the_definition_prints_for_a_deployment_by_hand():
    import subprocess
    import sys

    shown = subprocess.run([sys.executable, "-m", "replay.statemachine", "--steps-arn", "arn:s", "--worker-arn",
                            "arn:w", "--max-concurrency", "24", "--results-bucket", "b"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == definition("arn:s", "arn:w", 24, "b")
    bad = subprocess.run([sys.executable, "-m", "replay.statemachine", "--steps-arn", "arn:s"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_the_deployed_text_is_the_definition_generated_from_this_code():
    """infra/serverless.yml deploys infra/rebuild-state-machine.asl through Fn::Sub: it must be
    this code's definition (regenerate: python -m replay.statemachine --cloudformation)."""
    from pathlib import Path

    from replay.statemachine import DEPLOYED_TEXT, SUBSTITUTIONS, cloudformation_text

    text = cloudformation_text()
    assert (Path(__file__).resolve().parent.parent / DEPLOYED_TEXT).read_text() == text
    filled = text
    for name, value in zip(SUBSTITUTIONS, ("arn:s", "arn:w", "37", "the-bucket")):
        filled = filled.replace(f"${{{name}}}", value)
    assert json.loads(filled) == definition("arn:s", "arn:w", 37, "the-bucket")


# ---------------------------------------------------------------- ResultWriter's results, read back


RESULTS = RESULTS_PREFIX


@pytest.fixture
def s3(monkeypatch):
    from moto import mock_aws

    for name, value in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client


def test_finish_reads_more_units_than_the_inline_output_could_hold(s3):
    """3,000 units: inline, their totals alone would pass the state output's 256 KiB; with
    ResultWriter they come back from three result files."""
    outputs = [totals(n % 7) for n in range(3000)]
    assert len(json.dumps(outputs)) + 3000 * 900 > 256 * 1024  # each entry inline also carries its unit's input
    loaded = map_results.write(s3, BUCKET, RESULTS, outputs, per_file=1000)
    results = unit_totals(s3, loaded, BUCKET, RESULTS, 3000)
    assert len(results) == 3000
    assert loaded_totals(results, 3000, expected=sum(n % 7 for n in range(3000))).read == sum(n % 7 for n in range(3000))


def _manifest(s3, loaded) -> dict:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=loaded["ResultWriterDetails"]["Key"])["Body"].read())


def _rewrite(s3, loaded, manifest) -> None:
    s3.put_object(Bucket=BUCKET, Key=loaded["ResultWriterDetails"]["Key"], Body=json.dumps(manifest).encode())


@pytest.mark.parametrize("break_it, message", [
    (lambda s3, loaded: loaded.update(ResultWriterDetails={"Bucket": "elsewhere", "Key": loaded["ResultWriterDetails"]["Key"]}),
     "not under s3://rebuild-units/rebuilds/results/"),
    (lambda s3, loaded: loaded["ResultWriterDetails"].update(Key="rebuilds/other/results/x/manifest.json"), "not under"),
    (lambda s3, loaded: loaded.clear(), "names no ResultWriter manifest"),
    (lambda s3, loaded: s3.put_object(Bucket=BUCKET, Key=loaded["ResultWriterDetails"]["Key"], Body=b"{" * (2 << 20)),
     "larger than 1048576 bytes: not a ResultWriter manifest"),
    (lambda s3, loaded: s3.put_object(Bucket=BUCKET, Key=loaded["ResultWriterDetails"]["Key"], Body=b"[1, 2"), "is not JSON"),
    (lambda s3, loaded: _rewrite(s3, loaded, {**_manifest(s3, loaded), "ResultFiles": {
        "SUCCEEDED": [{"Key": "rebuilds/a-r1/units.json", "Size": 1}]}}), "outside"),
    (lambda s3, loaded: _rewrite(s3, loaded, {**_manifest(s3, loaded), "ResultFiles": {
        "SUCCEEDED": _manifest(s3, loaded)["ResultFiles"]["SUCCEEDED"] * 2}}), "not one more succeeded unit"),
    (lambda s3, loaded: _rewrite(s3, loaded, {**_manifest(s3, loaded), "ResultFiles": {
        "SUCCEEDED": [], "PENDING": [{"Key": "x", "Size": 1}]}}), "the map run has pending units"),
])
def test_results_that_are_not_what_this_build_s_map_wrote_stop_the_swap(s3, break_it, message):
    loaded = map_results.write(s3, BUCKET, RESULTS, [totals(1), totals(2)])
    break_it(s3, loaded)
    with pytest.raises(ReplayAborted, match=message):
        unit_totals(s3, loaded, BUCKET, RESULTS, 2)


def test_more_results_than_units_or_counts_that_are_not_whole_numbers_stop_the_swap(s3):
    loaded = map_results.write(s3, BUCKET, RESULTS, [totals(1), totals(2), totals(3)])
    with pytest.raises(ReplayAborted, match="more than the 2 units planned"):
        unit_totals(s3, loaded, BUCKET, RESULTS, 2)
    with pytest.raises(ReplayAborted, match="not whole numbers"):
        loaded_totals([totals(1), {"read": "1e9", "created": 0, "stale": 0}], 2, None)
    with pytest.raises(ReplayAborted, match="not whole numbers"):
        loaded_totals([totals(1), {"read": -5, "created": 0, "stale": 0}], 2, None)


def test_an_export_needs_a_bucket_locally_but_defaults_to_the_rebuild_bucket_on_step_functions():
    from indexer.errors import SettingsError
    from replay.full import FullOptions
    from replay.sources import check_flags
    from replay.stepfunctions import request_of

    with pytest.raises(SettingsError, match="--source export needs --export-bucket"):
        check_flags(FullOptions(source="export", engine="local"))
    on_step_functions = FullOptions(source="export", engine="stepfunctions")
    check_flags(on_step_functions)
    assert "export_bucket" not in request_of(on_step_functions)  # prepare picks REBUILD_BUCKET, exports/
