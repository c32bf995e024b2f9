"""The rebuild as a Step Functions state machine (Amazon States Language), built as plain data.

    Prepare ──► Announce (wait the live path's cache) ──► Plan ◄──► ExportWait   (export: poll)
                                                           │
                                 Load: Distributed Map over the units file in S3
                                   LoadUnit (worker Lambda) ◄──┐ while it returns a continuation
                                   More? ──────────────────────┘
                                                           │
                                   each unit's totals ──► ResultWriter: a manifest and result files in S3
                                                           │
                                   Finish (read the results, count check, swap) ──► Done
    any failure after Prepare ──► Abandon (drop the new index; the alias never moved) ──► Failed

Every iteration carries its unit, the build it writes to and its running totals, so a unit that
needs several Lambda invocations (15 minutes each at most) loops on its continuation, and its
last output holds the unit's counts. A unit that fails fails the map run (no tolerated failures):
Finish — the only state that moves the alias — is never reached. Step Functions' redrive of the
failed map run reruns only the failed units; units are idempotent.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from indexer.errors import ReplayAborted

from .mapresults import RESULTS_PREFIX
from .units import Done, check_read

#: Lambda errors worth retrying in place (throttling, a busy service), as AWS recommends.
LAMBDA_TRANSIENT = ["Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
                    "Lambda.TooManyRequestsException"]


def _invoke(function_arn: str, payload: dict[str, Any], next_state: str | None) -> dict[str, Any]:
    state: dict[str, Any] = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": function_arn, "Payload": payload},
        "Retry": [{"ErrorEquals": LAMBDA_TRANSIENT, "IntervalSeconds": 2, "MaxAttempts": 6, "BackoffRate": 2.0}],
    }
    if next_state:
        state["Next"] = next_state
    return state


def definition(steps_arn: str, worker_arn: str, max_concurrency: int, results_bucket: str) -> dict[str, Any]:
    """The state machine; ``max_concurrency`` caps the units loading at once (the cluster's
    limit); the Map writes its results to ``results_bucket`` (the units bucket, REBUILD_BUCKET)."""
    abandon = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Abandon"}]
    prepare = _invoke(steps_arn, {"step": "prepare", "request.$": "$", "execution.$": "$$.Execution.Id"}, "Announce")
    prepare.update(ResultSelector={"build.$": "$.Payload"}, ResultPath="$.prepared",
                   Catch=[{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Failed"}])
    plan = _invoke(steps_arn, {"step": "plan", "build.$": "$.prepared.build", "plan.$": "$.planned.plan"}, "Planned?")
    plan.update(ResultSelector={"plan.$": "$.Payload"}, ResultPath="$.planned", Catch=abandon)
    unit = _invoke(worker_arn, {"unit.$": "$.unit", "build.$": "$.build", "totals.$": "$.totals"}, "More?")
    unit.update(OutputPath="$.Payload")
    finish = _invoke(steps_arn, {"step": "finish", "build.$": "$.prepared.build", "plan.$": "$.planned.plan",
                                 "loaded.$": "$.loaded"}, "Done")
    finish.update(ResultSelector={"report.$": "$.Payload"}, ResultPath="$.finished", Catch=abandon)
    abandoned = _invoke(steps_arn, {"step": "abandon", "build.$": "$.prepared.build", "error.$": "$.error"}, "Failed")
    abandoned.update(ResultPath="$.abandoned",
                     Catch=[{"ErrorEquals": ["States.ALL"], "ResultPath": "$.abandon_error", "Next": "Failed"}])
    return {
        "Comment": "dynamodb-es-indexer: rebuild the index from a table export or scan, then swap the alias",
        "StartAt": "Prepare",
        "States": {
            "Prepare": prepare,
            "Announce": {"Type": "Wait", "SecondsPath": "$.prepared.build.wait_seconds", "Next": "FirstPlan"},
            "FirstPlan": {"Type": "Pass", "Result": {"plan": {}}, "ResultPath": "$.planned", "Next": "Plan"},
            "Plan": plan,
            "Planned?": {"Type": "Choice",
                         "Choices": [{"Variable": "$.planned.plan.ready", "BooleanEquals": True, "Next": "Load"}],
                         "Default": "ExportWait"},
            "ExportWait": {"Type": "Wait", "SecondsPath": "$.planned.plan.wait_seconds", "Next": "Plan"},
            "Load": {
                "Type": "Map",
                "ItemReader": {
                    "Resource": "arn:aws:states:::s3:getObject",
                    "ReaderConfig": {"InputType": "JSON"},
                    "Parameters": {"Bucket.$": "$.planned.plan.units_bucket", "Key.$": "$.planned.plan.units_key"},
                },
                "ItemSelector": {"unit.$": "$$.Map.Item.Value", "build.$": "$.prepared.build",
                                 "totals": {"read": 0, "created": 0, "stale": 0, "refused": 0}},
                "MaxConcurrency": max_concurrency,
                "ToleratedFailureCount": 0,
                # Each unit's totals go to S3, not into the state's output (256 KiB: ~2,500 units);
                # the Map's output is then where they are (Finish reads them: replay/mapresults.py).
                # Fixed, not paths: Step Functions adds the map run's id below the prefix.
                "ResultWriter": {
                    "Resource": "arn:aws:states:::s3:putObject",
                    "Parameters": {"Bucket": results_bucket, "Prefix": RESULTS_PREFIX},
                },
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": "LoadUnit",
                    "States": {
                        "LoadUnit": unit,
                        "More?": {"Type": "Choice",
                                  "Choices": [{"Variable": "$.unit", "IsNull": False, "Next": "LoadUnit"}],
                                  "Default": "UnitLoaded"},
                        "UnitLoaded": {"Type": "Pass", "OutputPath": "$.totals", "End": True},
                    },
                },
                "ResultPath": "$.loaded",
                "Catch": abandon,
                "Next": "Finish",
            },
            "Finish": finish,
            "Done": {"Type": "Succeed"},
            "Abandon": abandoned,
            "Failed": {"Type": "Fail", "Error": "RebuildFailed",
                       "Cause": "the rebuild did not finish; the alias was not moved"},
        },
    }


def loaded_totals(loaded: Sequence[Any], units: int, expected: int | None) -> Done:
    """The units' totals summed, for Finish: every unit must have reported whole counts, and for
    an export they must add up to the manifest's item count. ReplayAborted otherwise: no swap."""
    reported = [entry for entry in loaded if isinstance(entry, Mapping)]
    if len(loaded) != units or len(reported) != units:
        raise ReplayAborted(f"{units - len(reported)} of {units} units did not finish; the alias was not moved")
    total = Done()
    for entry in reported:
        names = ("read", "created", "stale", "replaced", "read_again")
        counts = [entry.get(name, 0) for name in names]
        if not all(type(count) is int and count >= 0 for count in counts):
            raise ReplayAborted(f"a unit reported counts that are not whole numbers: {str(dict(entry))[:200]}")
        read, created, stale, replaced, read_again = counts
        total.add(Done(read, created, stale, replaced=replaced, read_again=read_again))
    check_read(expected, total.read)
    return total


def execution_running(execution_arn: str) -> bool:
    """Whether a rebuild's execution still runs (its index is then no orphan). When Step
    Functions cannot be asked, the build counts as alive: deleting a live build loses work."""
    from botocore.exceptions import BotoCoreError, ClientError

    from indexer import aws

    try:
        status = aws.client("stepfunctions").describe_execution(executionArn=execution_arn)["status"]
    except ClientError as exc:
        return exc.response["Error"]["Code"] != "ExecutionDoesNotExist"
    except BotoCoreError:
        return True
    return status in ("RUNNING", "PENDING_REDRIVE")


def definition_json(steps_arn: str, worker_arn: str, max_concurrency: int, results_bucket: str) -> str:
    return json.dumps(definition(steps_arn, worker_arn, max_concurrency, results_bucket), indent=2)


#: The names infra/serverless.yml's Fn::Sub fills in the deployed text.
SUBSTITUTIONS = ("RebuildStepsArn", "RebuildWorkerArn", "RebuildMaxConcurrency", "RebuildBucket")
#: infra/serverless.yml reads the deployed text from this file (tests/test_infra.py: equal to
#: ``cloudformation_text()``; regenerate with ``python -m replay.statemachine --cloudformation``).
DEPLOYED_TEXT = "infra/rebuild-state-machine.asl"


def cloudformation_text() -> str:
    """The definition as CloudFormation deploys it: an Fn::Sub text whose ``${...}`` are the two
    Lambdas' ARNs, MaxConcurrency (a stack parameter, a number, so unquoted) and the rebuild
    bucket. One source of
    truth: infra/rebuild-state-machine.asl is this text, checked by tests/test_infra.py."""
    placeholder = 918273645
    steps, worker, concurrency, bucket = (f"${{{name}}}" for name in SUBSTITUTIONS)
    text = definition_json(steps, worker, placeholder, bucket)
    if "${" in text.replace(steps, "").replace(worker, "").replace(bucket, ""):
        raise ValueError("the definition holds a ${...} that Fn::Sub would try to fill")
    return text.replace(str(placeholder), concurrency) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m replay.statemachine``: print the definition, to deploy it by hand meanwhile."""
    import argparse

    from indexer.cliutil import Parser, positive_int

    p = Parser(prog="python -m replay.statemachine",
               description="Print the rebuild state machine (Amazon States Language) for the given Lambdas, "
                           f"or with --cloudformation the text infra/serverless.yml deploys ({DEPLOYED_TEXT}).")
    p.add_argument("--steps-arn", help="the Lambda running replay.steps.handler")
    p.add_argument("--worker-arn", help="the Lambda running replay.worker.handler")
    p.add_argument("--results-bucket", help="the bucket the Map writes its results to (REBUILD_BUCKET)")
    p.add_argument("--max-concurrency", type=positive_int, default=10,
                   help="units loading at once: the cluster's ingest / one worker's docs/s (default 10; docs/scale.md)")
    p.add_argument("--cloudformation", action="store_true",
                   help=f"print the deployed Fn::Sub text instead: python -m replay.statemachine --cloudformation "
                        f"> {DEPLOYED_TEXT}")
    args: argparse.Namespace = p.parse_args(argv)
    if args.cloudformation:
        print(cloudformation_text(), end="")
        return 0
    if not (args.steps_arn and args.worker_arn and args.results_bucket):
        p.error("--steps-arn, --worker-arn and --results-bucket are required (or --cloudformation)")
    print(definition_json(args.steps_arn, args.worker_arn, args.max_concurrency, args.results_bucket))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
