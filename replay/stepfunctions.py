"""``--engine stepfunctions``: start the deployed rebuild state machine and follow it.

The rebuild itself runs in AWS (replay/statemachine.py, replay/steps.py, replay.worker.handler),
so it survives this shell: Ctrl-C detaches, the execution goes on, and the line printed says how
to follow it again. Progress counts units from ``DescribeMapRun``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import structlog

from indexer import aws
from indexer.errors import ReplayAborted, SettingsError

from .progress import Progress

log = structlog.get_logger("replay.stepfunctions")


@dataclass(frozen=True)
class Followed:
    """What following an execution found: its report, or that we detached."""

    execution: str
    report: dict[str, Any] | None
    failed: bool = False

    def lines(self) -> list[str]:
        if self.report is None:
            return [f"detached; the rebuild goes on in Step Functions: {self.execution}"]
        r = self.report
        lines = [f"alias {r.get('alias')!r} now serves {r.get('index')}",
                 f"read {r.get('read')} items: {r.get('created')} written, "
                 f"{r.get('stale')} already newer from live writes"]
        if r.get("replaced"):
            lines.append(f"replaced {r.get('replaced')} transition documents (written while live writers switched "
                         f"to the new index; {r.get('read_again')} read again from the table)")
        return lines


def request_of(options: Any) -> dict[str, Any]:
    """The execution's input: what prepare needs from the flags."""
    request = {"source": options.source, "segments": options.segments, "bulk_size": options.bulk_size,
               "migrate": bool(options.migrate)}
    for name in ("export_bucket", "export_prefix", "export_kms_key"):
        if getattr(options, name, None):
            request[name] = getattr(options, name)
    return request


def run(options: Any, env: Mapping[str, str], say: Callable[[str], None]) -> Followed:
    """Start the state machine (``options``: replay.full.FullOptions) and follow it."""
    machine = options.state_machine_arn or env.get("REBUILD_STATE_MACHINE_ARN")
    if not machine:
        raise SettingsError("--engine stepfunctions needs --state-machine-arn or REBUILD_STATE_MACHINE_ARN "
                            "(the state machine built from replay.statemachine.definition)")
    sfn = aws.client("stepfunctions")
    execution = sfn.start_execution(stateMachineArn=machine, input=json.dumps(request_of(options)))["executionArn"]
    say(f"started {execution}")
    log.info("execution_started", execution=execution)
    return follow(sfn, execution, Progress("rebuild units", None, unit="units", enabled=options.progress),
                  options.follow_poll)


def follow(sfn: Any, execution: str, progress: Progress, poll: float,
           sleep: Callable[[float], None] = time.sleep) -> Followed:
    """Follow ``execution`` to its end: its report when it swapped, ReplayAborted when it failed;
    Ctrl-C detaches without stopping it."""
    try:
        while (described := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
            _advance(sfn, execution, progress)
            sleep(poll)
        _advance(sfn, execution, progress)
    except KeyboardInterrupt:
        return Followed(execution, None)
    finally:
        progress.close()
    if described["status"] != "SUCCEEDED":
        raise ReplayAborted(f"execution {execution} {described['status']}: {described.get('error', '')} "
                            f"{described.get('cause', '')}".strip())
    report = (json.loads(described.get("output") or "{}").get("finished") or {}).get("report") or {}
    return Followed(execution, report)


def _advance(sfn: Any, execution: str, progress: Progress) -> None:
    runs = sfn.list_map_runs(executionArn=execution).get("mapRuns") or []
    if not runs:
        return
    counts = sfn.describe_map_run(mapRunArn=runs[0]["mapRunArn"]).get("itemCounts") or {}
    done = int(counts.get("succeeded", 0)) + int(counts.get("failed", 0))
    progress.total = int(counts.get("total", 0)) or progress.total
    if done > progress.done:
        progress.advance(done - progress.done, failed=int(counts.get("failed", 0)) - progress.counters.get("failed", 0))
