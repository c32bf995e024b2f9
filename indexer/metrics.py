"""Figures an operator can alarm on: counted while a batch runs, rendered as CloudWatch's
embedded metric format (EMF), with no I/O.

An EMF document is one JSON log line that CloudWatch Logs turns into metrics: no API call, no
added latency, nothing to import (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/
CloudWatch_Embedded_Metric_Format_Specification.html). The handler and the replay tools print it
(the edge); building it is :func:`emf_document`, a pure function of the figures, the dimensions
and a timestamp. Powertools' ``Metrics`` does the same in more code and more import time
(measured in docs/benchmarks.md).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import orjson

from .records import MAX_EPOCH_SECONDS, Change, table_of

DEFAULT_NAMESPACE = "DynamoDBIndexer"
#: EMF's limits: at most 100 values in one metric's array and 100 metrics in one directive.
MAX_VALUES = 100
MAX_METRICS = 100
#: A dimension value must hold at least one non-blank character and at most 1,024.
MAX_DIMENSION_VALUE = 1024
#: CloudWatch namespaces: 1 to 255 of these characters, and not AWS's own ("AWS/...").
_NAMESPACE = re.compile(r"[A-Za-z0-9.\-_/#:]{1,255}")

Value = int | float | list[float]

#: Every metric the handler emits, with its CloudWatch unit.
HANDLER_UNITS: dict[str, str] = {
    "RecordsReceived": "Count",
    "RecordsIndexed": "Count",
    "RecordsDeleted": "Count",
    "RecordsStale": "Count",
    "RecordsSuperseded": "Count",
    "RecordsDeadLettered": "Count",
    "RecordsFailed": "Count",
    "VersionConflicts": "Count",
    "BulkRequests": "Count",
    "BulkLatency": "Milliseconds",
    "BulkBytes": "Bytes",
    "ReplicationLag": "Milliseconds",
    "OldestRecordAge": "Milliseconds",
}

#: ``Summary.counts()`` names → metric names.
_SUMMARY_METRICS = {
    "records": "RecordsReceived",
    "indexed": "RecordsIndexed",
    "deleted": "RecordsDeleted",
    "stale": "RecordsStale",
    "superseded": "RecordsSuperseded",
    "dead_lettered": "RecordsDeadLettered",
    "failed": "RecordsFailed",
}


def namespace_problem(name: str) -> str | None:
    """Why ``name`` cannot be a CloudWatch namespace, or None when it can."""
    if not _NAMESPACE.fullmatch(name):
        return "it must be 1 to 255 letters, digits or . - _ / # :"
    if name.startswith(("AWS/", ":")):
        return "namespaces starting with AWS/ (or :) are reserved for AWS"
    return None


@dataclass
class BatchMetrics:
    """What one invocation did to the cluster, counted as it happens.

    ``wall`` (epoch seconds) dates acknowledgements for the lag, comparable with the records'
    ``ApproximateCreationDateTime``; ``timer`` (monotonic) measures bulk latency. Both are
    injected so tests decide what time it is.
    """

    wall: Callable[[], float] = time.time
    timer: Callable[[], float] = time.perf_counter
    started_ms: float = 0.0
    bulk_requests: int = 0
    bulk_bytes: int = 0
    bulk_latency_ms: list[float] = field(default_factory=list)
    version_conflicts: int = 0
    #: (alias, doc_id) → when the cluster acknowledged the last write of that change (epoch ms).
    acknowledged_ms: dict[tuple[str, str], float] = field(default_factory=dict)
    #: The batch's largest lag from a record's creation to its acknowledged write (ms).
    replication_lag_ms: float | None = None
    #: How old the batch's oldest record was when the batch started (ms).
    oldest_record_age_ms: float | None = None

    def __post_init__(self) -> None:
        if not self.started_ms:
            self.started_ms = self.wall() * 1000

    def bulk_sent(self) -> float:
        """A mark to hand back to :meth:`bulk_answered`."""
        return self.timer()

    def bulk_answered(self, sent: float, size: int) -> float:
        """Count one answered bulk request of ``size`` bytes; when it was answered (epoch ms)."""
        self.bulk_requests += 1
        self.bulk_bytes += size
        self.bulk_latency_ms.append((self.timer() - sent) * 1000)
        return self.wall() * 1000

    def acknowledged(self, alias: str, doc_id: str, at_ms: float) -> None:
        """A write of this document was acknowledged; with dual writes, the last one counts."""
        key = (alias, doc_id)
        self.acknowledged_ms[key] = max(at_ms, self.acknowledged_ms.get(key, at_ms))

    def observe_records(self, records: Sequence[Any]) -> None:
        self.observe_created([created_ms(record) for record in records])

    def observe_created(self, created: Sequence[float | None]) -> None:
        """The batch's oldest record, from each record's creation time (epoch ms, or None)."""
        self.oldest_record_age_ms = oldest_of(created, self.started_ms)

    def observe_applied(self, records: Sequence[Any], applied: Iterable[Change]) -> None:
        self.observe_applied_at([created_ms(record) for record in records], applied)

    def observe_applied_at(self, created: Sequence[float | None], applied: Iterable[Change]) -> None:
        """The lag of the applied changes, from the creation times (epoch ms by position in the
        batch, or None) of the records each covers."""
        pairs = []
        for change in applied:
            acked = self.acknowledged_ms.get((change.alias, change.doc_id))
            if acked is None:
                continue
            times = [at for at in (created[position] for position in change.covers) if at is not None]
            if times:
                pairs.append((min(times), acked))
        self.replication_lag_ms = replication_lag_ms(pairs)


def created_ms(record: Any) -> float | None:
    """The record's ``ApproximateCreationDateTime`` in epoch milliseconds, or None.

    Lambda delivers whole seconds (rounded down), so a lag computed from it reads up to a
    second high; moto and the Streams API give milliseconds."""
    stream = record.get("dynamodb") if isinstance(record, dict) else None
    seconds = stream.get("ApproximateCreationDateTime") if isinstance(stream, dict) else None
    if type(seconds) in (int, float) and 0 < seconds < MAX_EPOCH_SECONDS:
        return float(seconds) * 1000
    return None


def oldest_age_ms(records: Iterable[Any], now_ms: float) -> float | None:
    """How long before ``now_ms`` the oldest record was written (never negative), or None."""
    return oldest_of([created_ms(record) for record in records], now_ms)


def oldest_of(created: Iterable[float | None], now_ms: float) -> float | None:
    """How long before ``now_ms`` the earliest of ``created`` (epoch ms, None for unknown) was."""
    times = [at for at in created if at is not None]
    return max(now_ms - min(times), 0.0) if times else None


def replication_lag_ms(pairs: Iterable[tuple[float, float]]) -> float | None:
    """The largest (acknowledged - created) over (created, acknowledged) pairs, in ms; clock
    skew between DynamoDB and us never makes it negative."""
    lags = [max(acked - created, 0.0) for created, acked in pairs]
    return max(lags) if lags else None


def handler_figures(counts: Mapping[str, int], metrics: BatchMetrics) -> dict[str, Value]:
    """The handler's metric values: the batch summary's counts and what ``metrics`` measured.
    Lag figures are left out when the batch had nothing to measure them on."""
    figures: dict[str, Value] = {_SUMMARY_METRICS[name]: counts.get(name, 0) for name in _SUMMARY_METRICS}
    figures["VersionConflicts"] = metrics.version_conflicts
    figures["BulkRequests"] = metrics.bulk_requests
    figures["BulkBytes"] = metrics.bulk_bytes
    if metrics.bulk_latency_ms:
        figures["BulkLatency"] = _values(metrics.bulk_latency_ms)
    if metrics.replication_lag_ms is not None:
        figures["ReplicationLag"] = round(metrics.replication_lag_ms, 1)
    if metrics.oldest_record_age_ms is not None:
        figures["OldestRecordAge"] = round(metrics.oldest_record_age_ms, 1)
    return figures


def _values(samples: list[float]) -> Value:
    """One value, or an array CloudWatch keeps each sample of (percentiles work). Past EMF's
    100 values, the largest 100: maximum and high percentiles stay right."""
    rounded = [round(sample, 1) for sample in samples]
    if len(rounded) == 1:
        return rounded[0]
    return sorted(rounded)[-MAX_VALUES:]


def batch_alias(records: Sequence[Any], default_alias: str | None) -> str:
    """The alias a batch wrote to: the configured one, else its stream's table, lower-cased."""
    if default_alias:
        return default_alias
    for record in records[:1]:
        table = table_of(record.get("eventSourceARN")) if isinstance(record, dict) else None
        if table:
            return table.lower()
    return "unknown"


def dimensions(alias: str, function_name: str | None = None, **more: str) -> dict[str, str]:
    """The dimension members of a document: the alias, and the function where there is one."""
    found = {"Alias": alias}
    if function_name:
        found["FunctionName"] = function_name
    found.update(more)
    return {name: _dimension_value(value) for name, value in found.items()}


def _dimension_value(value: str) -> str:
    text = str(value)[:MAX_DIMENSION_VALUE]
    return text if text.strip() else "unknown"


def emf_document(
    figures: Mapping[str, Value],
    units: Mapping[str, str],
    namespace: str,
    dimension_values: Mapping[str, str],
    timestamp_ms: float,
) -> dict[str, Any]:
    """The EMF document for ``figures``: the ``_aws`` metadata (timestamp, one directive with
    the namespace, one dimension set and each metric with its unit), then the dimension and
    metric values as top-level members, as the specification requires."""
    names = [name for name in figures if name in units][:MAX_METRICS]
    document: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(timestamp_ms),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [list(dimension_values)],
                "Metrics": [{"Name": name, "Unit": units[name]} for name in names],
            }],
        },
    }
    document.update(dimension_values)
    for name in names:
        document[name] = figures[name]
    return document


def emf_line(document: Mapping[str, Any]) -> str:
    """The document as the one line CloudWatch Logs reads it from."""
    return orjson.dumps(document).decode()
