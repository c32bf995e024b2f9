"""A handler for local sync tests: wraps the project's handler, fails chosen sequence numbers a
chosen number of times (by raising, or by reporting them in ``batchItemFailures``), and records
every invocation so tests can check what reached the function, in which order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from indexer import handler as project_handler


@dataclass
class Call:
    """One invocation: its records as (item key, sequence number), and what it acknowledged."""

    records: list[tuple[str, str]]
    #: Sequence numbers the function took (a prefix of ``records``): all on success, none when
    #: it raised, those before the lowest reported failure otherwise.
    acknowledged: list[str] = field(default_factory=list)

    @property
    def sequences(self) -> list[str]:
        return [sequence for _, sequence in self.records]


class UnexpectedTestFailure(RuntimeError):
    """Raised on purpose: a function error as Lambda sees one."""


@dataclass
class Flaky:
    #: sequence number -> how many more invocations holding it must fail
    fail: dict[str, int] = field(default_factory=dict)
    #: "raise" (a function error) or "report" (a partial batch response)
    mode: str = "raise"
    #: Called after each invocation with the calls so far (e.g. to stop the sync, or crash).
    after: Callable[[list[Call]], None] | None = None
    calls: list[Call] = field(default_factory=list)

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        records = event["Records"]
        call = Call([(_key(r), r["dynamodb"]["SequenceNumber"]) for r in records])
        self.calls.append(call)
        try:
            return self._invoke(call, event, context)
        finally:
            if self.after is not None:
                self.after(self.calls)

    def _invoke(self, call: Call, event: dict[str, Any], context: Any) -> dict[str, Any]:
        failing = [s for s in call.sequences if self.fail.get(s, 0) > 0]
        for sequence in failing:
            self.fail[sequence] -= 1
        if failing and self.mode == "raise":
            raise UnexpectedTestFailure(f"failing on purpose at {failing}")
        passing = [r for r in event["Records"] if r["dynamodb"]["SequenceNumber"] not in failing]
        response = project_handler.handler({"Records": passing}, context) if passing else {"batchItemFailures": []}
        reported = [f["itemIdentifier"] for f in response["batchItemFailures"]] + failing
        lowest = min((int(s) for s in reported), default=None)
        call.acknowledged = [s for s in call.sequences if lowest is None or int(s) < lowest]
        return {"batchItemFailures": [{"itemIdentifier": s} for s in reported]}


def _key(record: dict[str, Any]) -> str:
    return record["dynamodb"]["Keys"]["pk"]["S"]
