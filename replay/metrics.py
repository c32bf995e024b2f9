"""``--metrics``: the summaries of ``--full``, ``--verify`` and ``--redrive`` as CloudWatch
embedded-metric-format lines, as the handler emits its own (:mod:`indexer.metrics`).

Run on a schedule where stdout reaches CloudWatch Logs (a Lambda, an ECS task with the awslogs
driver), a verify then becomes a ``Drift`` metric to alarm on. Dimensions: the alias and the
command. The figures are pure functions of each command's result; the CLI prints the line.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

from indexer import metrics
from indexer.settings import Settings

from .full import Rebuilt
from .redrive.report import Summary
from .verify import Verified

FULL_UNITS = {
    "ItemsScanned": "Count",
    "DocumentsWritten": "Count",
    "DocumentsStale": "Count",
    "DocumentsReplaced": "Count",
    "ItemsFailed": "Count",
    "Duration": "Seconds",
}

VERIFY_UNITS = {
    "Drift": "Count",
    "DocumentsMissing": "Count",
    "DocumentsDiffering": "Count",
    "DocumentsExtra": "Count",
    "ItemsUnconvertible": "Count",
    "DocumentsFixed": "Count",
    "DocumentsNotFixed": "Count",
}

#: ``replay.redrive.report.Summary.counts()`` names → metric names.
_REDRIVE_NAMES = {
    "messages": "Messages",
    "redriven": "MessagesRedriven",
    "stale": "MessagesStale",
    "failed_again": "MessagesFailedAgain",
    "parked": "MessagesParked",
    "unreadable": "MessagesUnreadable",
    "gone": "MessagesGone",
    "unresolved": "MessagesUnresolved",
    "unparked": "MessagesUnparked",
    "records_indexed": "RecordsIndexed",
    "records_deleted": "RecordsDeleted",
}
REDRIVE_UNITS = {name: "Count" for name in _REDRIVE_NAMES.values()}


def full_figures(rebuilt: Rebuilt) -> dict[str, metrics.Value]:
    return {"ItemsScanned": rebuilt.scanned, "DocumentsWritten": rebuilt.created, "DocumentsStale": rebuilt.stale,
            "DocumentsReplaced": rebuilt.replaced, "ItemsFailed": len(rebuilt.failed), "Duration": round(rebuilt.seconds, 3)}


def verify_figures(verified: Verified) -> dict[str, metrics.Value]:
    """Drift is what the audit found (before any ``--fix``): missing + differing + extra."""
    drift = verified.drift
    figures: dict[str, metrics.Value] = {
        "Drift": drift.total(), "DocumentsMissing": len(drift.missing), "DocumentsDiffering": len(drift.differing),
        "DocumentsExtra": len(drift.extra), "ItemsUnconvertible": len(drift.unconvertible),
    }
    if verified.fixed is not None:
        figures["DocumentsFixed"], figures["DocumentsNotFixed"] = verified.fixed
    return figures


def redrive_figures(counts: Mapping[str, int]) -> dict[str, metrics.Value]:
    """From ``replay.redrive.report.Summary.counts()``."""
    return {metric: counts.get(name, 0) for name, metric in _REDRIVE_NAMES.items()}


def document(figures: Mapping[str, metrics.Value], units: Mapping[str, str], command: str, alias: str | None,
             namespace: str, now_ms: float) -> dict[str, Any]:
    """The EMF document of one command's summary."""
    dimensions = metrics.dimensions(alias or "all", None, Command=command)
    return metrics.emf_document(figures, units, namespace, dimensions, now_ms)


def summary_line(result: Rebuilt | Verified | Summary, env: Mapping[str, str],
                 clock: Callable[[], float] = time.time) -> str | None:
    """The EMF line of a command's result (None for a dry-run redrive: nothing happened)."""
    settings = Settings.from_env(env)
    if isinstance(result, Rebuilt):
        command, alias, figures, units = "full", result.alias, full_figures(result), FULL_UNITS
    elif isinstance(result, Verified):
        command, alias, figures, units = "verify", result.alias, verify_figures(result), VERIFY_UNITS
    elif result.dry_run:
        return None
    else:
        command, alias, figures, units = "redrive", settings.index_name, redrive_figures(result.counts()), REDRIVE_UNITS
    return metrics.emf_line(document(figures, units, command, alias, settings.metrics_namespace, clock() * 1000))
