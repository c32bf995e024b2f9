"""The Distributed Map's results, read back from where its ResultWriter put them in S3.

Inline, a Map's results are the state's output, which Step Functions caps at 256 KiB: about
2,500 units' totals. With ResultWriter (replay/statemachine.py) the Map's output only says where
the results are, in AWS's documented layout
(https://docs.aws.amazon.com/step-functions/latest/dg/input-output-resultwriter.html)::

    {"MapRunArn": "...", "ResultWriterDetails": {"Bucket": "b", "Key": "<prefix>/<map run id>/manifest.json"}}

    manifest.json: {"DestinationBucket": "b", "MapRunArn": "...",
                    "ResultFiles": {"FAILED": [{"Key": "...", "Size": 123}], "PENDING": [], "SUCCEEDED": [...]}}
    SUCCEEDED_0.json: [{"ExecutionArn": "...", "Status": "SUCCEEDED", "Input": "<JSON text>",
                        "Output": "<JSON text>", ...}, ...]

Every byte of it is untrusted input to the one step that moves the alias: sizes are bounded
before and while reading, every key must lie beside the manifest under the results prefix, and
anything unexpected is a ReplayAborted — no swap.
"""

from __future__ import annotations

from typing import Any, Mapping

import orjson

from indexer.errors import ReplayAborted

from . import export as exports

#: The manifest names a few files per status; anything far bigger is not one.
MANIFEST_MAX_BYTES = 1024 * 1024
#: One result file: ~1 KiB per unit (its input and totals), so this is ~100,000 units a file.
RESULT_FILE_MAX_BYTES = 256 * 1024 * 1024
MAX_RESULT_FILES = 1000


#: Where the Map writes its results in the rebuild bucket (below it: one folder per map run).
RESULTS_PREFIX = "rebuilds/results"


def unit_totals(s3: Any, loaded: Any, bucket: str, prefix: str, units: int) -> list[Mapping[str, Any]]:
    """Each finished unit's totals (its child execution's output), from the manifest the Map's
    output ``loaded`` points at. ReplayAborted when any unit failed or is pending, or when the
    results are not where or what the rebuild's Map writes."""
    details = loaded.get("ResultWriterDetails") if isinstance(loaded, Mapping) else None
    if not isinstance(details, Mapping):
        raise ReplayAborted("the map run's output names no ResultWriter manifest; the alias was not moved")
    key = details.get("Key")
    if details.get("Bucket") != bucket or not isinstance(key, str) or not _beneath(key, prefix) \
            or not key.endswith("/manifest.json"):
        raise ReplayAborted(f"the map run's results are not under s3://{bucket}/{prefix}/: "
                            f"{str(dict(details))[:200]}")
    manifest = _json(exports.get(s3, bucket, key, MANIFEST_MAX_BYTES, "a ResultWriter manifest"), key)
    files = manifest.get("ResultFiles") if isinstance(manifest, Mapping) else None
    if not isinstance(files, Mapping):
        raise ReplayAborted(f"s3://{bucket}/{key} has no ResultFiles")
    unfinished = [status for status in ("FAILED", "PENDING") if files.get(status)]
    if unfinished:
        raise ReplayAborted(f"the map run has {' and '.join(unfinished).lower()} units (s3://{bucket}/{key}); "
                            "the alias was not moved: redrive the execution or rerun")
    succeeded = files.get("SUCCEEDED") or []
    if not isinstance(succeeded, list) or len(succeeded) > MAX_RESULT_FILES:
        raise ReplayAborted(f"s3://{bucket}/{key} lists an unreadable set of result files")
    beside = key.rsplit("/", 1)[0]
    totals: list[Mapping[str, Any]] = []
    executions: set[str] = set()
    for listed in succeeded:
        name = listed.get("Key") if isinstance(listed, Mapping) else None
        if not isinstance(name, str) or not _beneath(name, beside):
            raise ReplayAborted(f"s3://{bucket}/{key} lists a result file outside {beside}/: {str(listed)[:200]}")
        for execution in _executions(exports.get(s3, bucket, name, RESULT_FILE_MAX_BYTES, "a ResultWriter file"), name):
            arn = execution.get("ExecutionArn")
            if execution.get("Status") != "SUCCEEDED" or not isinstance(arn, str) or arn in executions:
                raise ReplayAborted(f"{name}: an entry that is not one more succeeded unit: {str(arn)[:200]}")
            executions.add(arn)
            if len(totals) == units:
                raise ReplayAborted(f"the map run reports more than the {units} units planned")
            output = _json(execution.get("Output"), name) if isinstance(execution.get("Output"), str) else None
            if not isinstance(output, Mapping):
                raise ReplayAborted(f"{name}: unit {arn} has no totals")
            totals.append(output)
    return totals


def _beneath(key: str, prefix: str) -> bool:
    return key.startswith(prefix.rstrip("/") + "/") and "/../" not in f"/{key}/" and "//" not in key


def _json(text: Any, where: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ReplayAborted(f"{where} is not JSON: {exc}") from None


def _executions(body: bytes, where: str) -> list[Mapping[str, Any]]:
    executions = _json(body, where)
    if not isinstance(executions, list) or not all(isinstance(e, Mapping) for e in executions):
        raise ReplayAborted(f"{where} is not a JSON array of executions")
    return executions
