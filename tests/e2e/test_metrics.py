"""The metrics the Lambdas print as CloudWatch Embedded Metric Format, read from the local stack's
Lambda log: valid EMF, and each value what the job's timeline says it must be."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from harness import client, emf

LABELS = ["self-hosted", "tasuki-2cpu-4gb"]
# Fargate Linux/x86 in us-east-1 (aws.amazon.com/fargate/pricing), Spot estimated at 30 %: the
# price table `domain::price` must give these.
SPOT_2CPU_4GB_X64_PER_SECOND = (2 * 0.04048 + 4 * 0.004445) * 0.30 / 3600


def at(row: dict[str, Any]) -> float:
    """Epoch seconds of a timeline row's RFC 3339 time (nanoseconds, which fromisoformat can't read)."""
    whole, _, rest = row["at"].rstrip("Z").partition(".")
    return datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp() + float(f"0.{rest or 0}")


def entered(timeline: list[dict[str, Any]], event: str, attempt: int | None = None) -> dict[str, Any]:
    [row] = [r for r in timeline if r["event"] == event and (attempt is None or r["attempt"] == attempt)]
    return row


def value(docs: dict[str, list[dict[str, Any]]], name: str) -> float:
    [doc] = docs[name]
    return float(doc[name])


def dimension(docs: dict[str, list[dict[str, Any]]], name: str, key: str) -> str:
    [doc] = docs[name]
    assert doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[key], []], "with and without its dimension"
    return str(doc[key])


def test_a_job_with_one_capacity_fallback_reports_it_and_its_latencies_attempts_and_cost(job_ids, config):
    client.add_fault("capacity", capacity_provider="FARGATE_SPOT", subnet=config["network"]["subnets"]["us-east-1a"])
    job = client.queue_job(LABELS)
    job_ids.append(job)
    client.wait_for_state(job, "completed", timeout=120)
    docs = emf.of_job(job, {"Fallbacks", "QueuedToRunningSeconds", "JobsFinished", "JobCostUSD"})
    timeline = client.timeline(job)

    assert value(docs, "Fallbacks") == 1
    assert dimension(docs, "Fallbacks", "Reason") == "CapacityUnavailable"
    received, waiting, running = (
        entered(timeline, "received"),
        entered(timeline, "waiting-for-registration", 2),
        entered(timeline, "running"),
    )
    assert abs(value(docs, "QueuedToRunningSeconds") - (at(running) - at(received))) < 1e-3
    assert abs(value(docs, "LaunchToRegisteredSeconds") - (at(running) - at(waiting))) < 1e-3
    # The second candidate is Spot in the next AZ.
    assert dimension(docs, "QueuedToRunningSeconds", "Capacity") == "fargate-spot"
    assert dimension(docs, "LaunchToRegisteredSeconds", "Capacity") == "fargate-spot"

    assert value(docs, "JobsFinished") == 1 and dimension(docs, "JobsFinished", "State") == "completed"
    assert value(docs, "AttemptsPerJob") == 2
    # Attempt 1's RunTask failed: no task, no runner seconds. Attempt 2 ran from its launch to the end.
    runner_seconds = at(entered(timeline, "completed")) - at(waiting)
    assert abs(value(docs, "RunnerSeconds") - runner_seconds) < 1e-3
    orchestration = value(docs, "JobCostUSD") - runner_seconds * SPOT_2CPU_4GB_X64_PER_SECOND
    assert 0 < orchestration < 0.001, f"orchestration {orchestration} USD"


def test_a_refused_job_reports_its_final_state_and_no_runner(job_ids):
    job = client.queue_job(["self-hosted", "tasuki", "gpu"])
    job_ids.append(job)
    client.wait_for_state(job, "refused", timeout=60)
    docs = emf.of_job(job, {"JobsFinished", "AttemptsPerJob", "RunnerSeconds"})
    assert value(docs, "JobsFinished") == 1 and dimension(docs, "JobsFinished", "State") == "refused"
    assert value(docs, "AttemptsPerJob") == 0
    assert value(docs, "RunnerSeconds") == 0
    assert "Fallbacks" not in docs and "QueuedToRunningSeconds" not in docs


def test_a_cancelled_job_reports_its_final_state_and_the_runner_seconds_it_used(job_ids):
    job = client.queue_job(LABELS, behaviour={"never_register": [1]})
    job_ids.append(job)
    client.wait_for_state(job, "waiting-for-registration", timeout=60)
    time.sleep(1)  # a runner that ran a measurable while
    assert client.cancel_job(job)["status"] == 202
    client.wait_for_state(job, "cancelled", timeout=60)
    docs = emf.of_job(job, {"JobsFinished", "RunnerSeconds"})
    timeline = client.timeline(job)
    assert value(docs, "JobsFinished") == 1 and dimension(docs, "JobsFinished", "State") == "cancelled"
    assert value(docs, "AttemptsPerJob") == 1
    used = at(entered(timeline, "cancelled")) - at(entered(timeline, "waiting-for-registration"))
    assert used >= 1 and abs(value(docs, "RunnerSeconds") - used) < 1e-3
    assert "QueuedToRunningSeconds" not in docs, "it never ran"


def test_every_emf_line_the_lambdas_printed_is_valid_and_github_budgets_are_reported():
    docs = emf.documents()
    assert docs, "the jobs above printed metrics"
    assert {name: problems for doc in docs for name in emf.metric_names(doc) if (problems := emf.problems(doc))} == {}
    budgets = [float(d["GitHubRateLimitRemaining"]) for d in docs if "GitHubRateLimitRemaining" in d]
    assert budgets and all(0 <= b <= 15000 for b in budgets), budgets[:5]


def test_the_emf_check_refuses_what_cloudwatch_would_not_extract():
    now = 1_795_392_000_000
    good: dict[str, Any] = {
        "_aws": {
            "Timestamp": now,
            "CloudWatchMetrics": [
                {"Namespace": "Tasuki", "Dimensions": [["State"], []], "Metrics": [{"Name": "X", "Unit": "Count"}]}
            ],
        },
        "State": "completed",
        "X": 1,
    }
    assert emf.problems(good, now) == []
    for broken, why in (
        ({**good, "State": 3}, "dimension 'State' names no string member"),
        ({**good, "X": "1"}, "metric 'X' names no number"),
        ({**good, "_aws": {**good["_aws"], "Timestamp": now - 15 * 24 * 3600 * 1000}}, "outside"),
    ):
        assert any(why in p for p in emf.problems(broken, now)), (why, emf.problems(broken, now))
