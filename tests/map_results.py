"""A Distributed Map's results laid out in S3 as its ResultWriter leaves them, per AWS's
documentation (https://docs.aws.amazon.com/step-functions/latest/dg/input-output-resultwriter.html):
``<prefix>/<map run id>/manifest.json`` listing ``SUCCEEDED_<n>.json`` / ``FAILED_<n>.json`` /
``PENDING_<n>.json``, each a JSON array of child executions whose ``Input`` and ``Output`` are
JSON text. moto's ResultWriter writes the manifest with every list empty and no result files, so
tests that need results write them here, in that layout, and test the product against it only.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

ACCOUNT = "123456789012"
MACHINE = f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:rebuild"


def _execution(run_id: str, n: int, output: Any, status: str) -> dict[str, Any]:
    entry = {
        "ExecutionArn": f"arn:aws:states:us-east-1:{ACCOUNT}:execution:rebuild/Load:{run_id}-{n}",
        "Input": json.dumps({"unit": {"kind": "scan", "segment": n, "segments": n + 1}}),
        "InputDetails": {"Included": True}, "Name": f"{run_id}-{n}",
        "RedriveCount": 0, "RedriveStatus": "NOT_REDRIVABLE", "StartDate": "2026-12-03T10:00:00.000Z",
        "StateMachineArn": MACHINE, "Status": status, "StopDate": "2026-12-03T10:01:00.000Z",
    }
    if status == "SUCCEEDED":
        entry.update(Output=json.dumps(output), OutputDetails={"Included": True})
    else:
        entry.update(Error="States.TaskFailed", Cause="the worker could not load its unit",
                     RedriveStatus="REDRIVABLE")
    return entry


def write(s3: Any, bucket: str, prefix: str, outputs: Sequence[Mapping[str, Any]], per_file: int = 1000,
          failed: int = 0, run_id: str = "0c1a2b3c-run") -> dict[str, Any]:
    """Results of a map run whose units answered ``outputs`` (and ``failed`` more failed); the
    Map state's output, which points at the manifest."""
    base = f"{prefix}/{run_id}"
    files: dict[str, list[dict[str, Any]]] = {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
    entries = [("SUCCEEDED", _execution(run_id, n, out, "SUCCEEDED")) for n, out in enumerate(outputs)]
    entries += [("FAILED", _execution(run_id, len(outputs) + n, None, "FAILED")) for n in range(failed)]
    for status in files:
        mine = [entry for kind, entry in entries if kind == status]
        for n, start in enumerate(range(0, len(mine), per_file)):
            body = json.dumps(mine[start:start + per_file]).encode()
            key = f"{base}/{status}_{n}.json"
            s3.put_object(Bucket=bucket, Key=key, Body=body)
            files[status].append({"Key": key, "Size": len(body)})
    map_run = f"arn:aws:states:us-east-1:{ACCOUNT}:mapRun:rebuild/Load:{run_id}"
    manifest = {"DestinationBucket": bucket, "MapRunArn": map_run, "ResultFiles": files}
    s3.put_object(Bucket=bucket, Key=f"{base}/manifest.json", Body=json.dumps(manifest).encode())
    return {"MapRunArn": map_run, "ResultWriterDetails": {"Bucket": bucket, "Key": f"{base}/manifest.json"}}
