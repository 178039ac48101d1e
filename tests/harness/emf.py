"""CloudWatch Embedded Metric Format lines, read from the local stack's Lambda log and checked as
strictly as CloudWatch Logs checks them before it extracts a metric.

Rules from the specification
(https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html):
the line is one JSON object; `_aws` holds `Timestamp` (epoch milliseconds) and `CloudWatchMetrics`,
an array of directives; a directive has `Namespace` (a string), `Dimensions` (an array of
dimension sets, each an array of at most 30 member names whose values are strings) and `Metrics`
(at most 100 definitions, each a `Name` naming a member whose value is a number or an array of at
most 100 numbers, an optional `Unit` from CloudWatch's StandardUnit list, an optional
`StorageResolution` of 1 or 60). CloudWatch accepts a timestamp up to two weeks in the past and two
hours in the future (PutLogEvents: "None of the log events in the batch can be more than 2 hours in
the future ... older than 14 days").
"""

from __future__ import annotations

import json
import time
from typing import Any

from harness.common import LOG_DIR

# CloudWatch StandardUnit (API_MetricDatum).
STANDARD_UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes",
    "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second",
    "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second",
    "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
}  # fmt: skip
TWO_WEEKS_MS = 14 * 24 * 3600 * 1000
TWO_HOURS_MS = 2 * 3600 * 1000


def problems(doc: Any, now_ms: int | None = None) -> list[str]:
    """What makes `doc` not a valid EMF document (empty: valid)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if not isinstance(doc, dict) or not isinstance(doc.get("_aws"), dict):
        return ["not an object with an `_aws` object"]
    meta = doc["_aws"]
    found = []
    stamp = meta.get("Timestamp")
    if not isinstance(stamp, int) or isinstance(stamp, bool):
        found.append(f"Timestamp {stamp!r} is not integer epoch milliseconds")
    elif not now_ms - TWO_WEEKS_MS <= stamp <= now_ms + TWO_HOURS_MS:
        found.append(f"Timestamp {stamp} is outside [now - 14 days, now + 2 hours]")
    directives = meta.get("CloudWatchMetrics")
    if not isinstance(directives, list) or not directives:
        return [*found, "CloudWatchMetrics is not a non-empty array"]
    for directive in directives:
        if not isinstance(directive.get("Namespace"), str) or not directive["Namespace"]:
            found.append("a directive without a Namespace")
        for dimension_set in directive.get("Dimensions", []):
            if not isinstance(dimension_set, list) or len(dimension_set) > 30:
                found.append(f"dimension set {dimension_set!r} is not an array of at most 30 names")
                continue
            for name in dimension_set:
                if not isinstance(doc.get(name), str):
                    found.append(f"dimension {name!r} names no string member")
        metrics = directive.get("Metrics")
        if not isinstance(metrics, list) or len(metrics) > 100:
            found.append("Metrics is not an array of at most 100 definitions")
            continue
        for metric in metrics:
            name = metric.get("Name")
            value = doc.get(name)
            numbers = value if isinstance(value, list) else [value]
            if not numbers or len(numbers) > 100 or not all(_is_number(v) for v in numbers):
                found.append(f"metric {name!r} names no number (or array of at most 100 numbers): {value!r}")
            if "Unit" in metric and metric["Unit"] not in STANDARD_UNITS:
                found.append(f"metric {name!r} has unit {metric['Unit']!r}, not a StandardUnit")
            if "StorageResolution" in metric and metric["StorageResolution"] not in (1, 60):
                found.append(f"metric {name!r} has StorageResolution {metric['StorageResolution']!r}")
    return found


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def documents() -> list[dict[str, Any]]:
    """Every EMF document the local Lambdas printed so far."""
    docs = []
    path = LOG_DIR / "lambdas.log"
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        if '"_aws"' not in line:
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict) and "_aws" in doc:
            docs.append(doc)
    return docs


def metric_names(doc: dict[str, Any]) -> list[str]:
    return [m["Name"] for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]


def of_job(job_id: str, until: set[str], timeout: float = 15) -> dict[str, list[dict[str, Any]]]:
    """The job's EMF documents by metric name, once every metric in `until` was printed (a Lambda
    prints its line just after the transition the test waited for). Bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        by_name: dict[str, list[dict[str, Any]]] = {}
        for doc in documents():
            if str(doc.get("job_id")) == str(job_id):
                for name in metric_names(doc):
                    by_name.setdefault(name, []).append(doc)
        if until <= by_name.keys() or time.monotonic() > deadline:
            return by_name
        time.sleep(0.25)
