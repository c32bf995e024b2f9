"""A checker for CloudWatch's embedded metric format, written from its specification
(https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html),
so tests hold every EMF line we print to what CloudWatch Logs accepts."""

from __future__ import annotations

import json
from typing import Any

#: The units CloudWatch accepts (MetricDatum.Unit).
UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes",
    "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second",
    "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second",
    "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check(line: str) -> dict[str, Any]:
    """The parsed document; AssertionError naming the first rule ``line`` breaks."""
    assert "\n" not in line, "an EMF document is one log line"
    document = json.loads(line)
    assert isinstance(document, dict), "the root node is an object"
    meta = document.get("_aws")
    assert isinstance(meta, dict), "the root has an _aws metadata object"
    assert set(meta) <= {"Timestamp", "CloudWatchMetrics"}, f"unknown _aws members: {set(meta)}"
    assert isinstance(meta.get("Timestamp"), int) and meta["Timestamp"] > 0, "Timestamp: epoch milliseconds"
    directives = meta.get("CloudWatchMetrics")
    assert isinstance(directives, list) and directives, "CloudWatchMetrics: an array of directives"
    for directive in directives:
        assert set(directive) == {"Namespace", "Dimensions", "Metrics"}, f"directive members: {set(directive)}"
        namespace = directive["Namespace"]
        assert isinstance(namespace, str) and 1 <= len(namespace) <= 255, "Namespace: 1 to 255 characters"
        dimension_sets = directive["Dimensions"]
        assert isinstance(dimension_sets, list), "Dimensions: an array of dimension sets"
        for dimension_set in dimension_sets:
            assert isinstance(dimension_set, list) and len(dimension_set) <= 30, "a dimension set: <= 30 names"
            for name in dimension_set:
                value = document.get(name)
                assert isinstance(value, str), f"dimension {name}: a top-level string member"
                assert value.strip() and len(value) <= 1024, f"dimension {name}: 1 to 1024 characters"
        metrics = directive["Metrics"]
        assert isinstance(metrics, list) and len(metrics) <= 100, "Metrics: at most 100 definitions"
        for definition in metrics:
            assert set(definition) <= {"Name", "Unit", "StorageResolution"}, f"definition: {set(definition)}"
            name = definition["Name"]
            assert isinstance(name, str) and 1 <= len(name) <= 255, "metric Name: 1 to 255 characters"
            assert definition.get("Unit", "None") in UNITS, f"{name}: unit {definition.get('Unit')!r}"
            value = document.get(name)
            if isinstance(value, list):
                assert 1 <= len(value) <= 100 and all(map(_number, value)), f"{name}: <= 100 numbers"
            else:
                assert _number(value), f"{name}: a top-level number member"
    return document


def documents(output: str) -> list[dict[str, Any]]:
    """Every EMF document among ``output``'s lines (other log lines are skipped), checked."""
    return [check(line) for line in output.splitlines() if line.startswith("{") and '"_aws"' in line]
