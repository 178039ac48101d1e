"""The fault matrix (issue 10): one named test per failure, each asserting the job's last lifecycle
row, that no task is left running and that no runner tasuki registered is left behind.

Rows covered elsewhere: duplicate delivery, capacity in every candidate, task stops before
registration, runner never registers, stolen job, lost in_progress on a long job, cancel while
waiting (test_lifecycle.py); StartExecution failure, lost completed, lost queued, a sweep racing a
callback and two sweeps at once (test_rescue.py).
"""

from __future__ import annotations

import time

from harness import client

LABELS = ["self-hosted", "tasuki-2cpu-4gb"]


def queue(job_ids: list[str], **kwargs) -> str:
    job = client.queue_job(LABELS, **kwargs)
    job_ids.append(job)
    return job


def last_row(job: str) -> dict:
    return client.timeline(job)[-1]


def assert_nothing_left(job: str) -> None:
    assert client.leftovers(job) == {"tasks": [], "runners": []}


def test_aws_throttling_of_runtask_is_retried_on_the_same_candidate(job_ids):
    job = queue(job_ids)
    # Its RunTask comes three steps after the webhook answered: the rule is in place by then.
    client.add_fault("throttle", job_id=job, times=2)
    item = client.wait_for_state(job, "completed", timeout=120)
    assert item["attempt"] == 1, "throttling is retried, not a failed attempt"
    assert "attempt-failed" not in [e["event"] for e in client.timeline(job)]
    throttled = [r for r in client.mock_state()["run_task_requests"] if str(r["job_id"]) == job]
    assert [r["outcome"] for r in throttled] == ["throttle", "throttle", "started"]
    assert last_row(job)["event"] == "completed"
    assert_nothing_left(job)


def test_cancel_while_running_stops_the_task_and_removes_the_runner(job_ids):
    job = queue(job_ids, behaviour={"hold": True})
    client.wait_for_state(job, "running", timeout=60)
    assert client.cancel_job(job)["status"] == 202
    item = client.wait_for_state(job, "cancelled", timeout=60)
    assert item["reason"] == "cancelled on GitHub while running"
    assert last_row(job)["event"] == "cancelled"
    assert_nothing_left(job)


def test_cancel_between_capacity_rounds_launches_nothing_more(job_ids, config):
    client.add_fault("capacity")
    job = queue(job_ids)
    # Every candidate fails; the job waits capacity_wait_seconds for a new round: cancel then.
    deadline = time.time() + 60
    while time.time() < deadline and "round 2 starts" not in (last_row(job).get("reason") or ""):
        time.sleep(0.5)
    launched = [e for e in client.timeline(job) if e["event"] == "launching"]
    assert client.cancel_job(job)["status"] == 202
    item = client.wait_for_state(job, "cancelled", timeout=config["timeouts"]["capacity_wait_seconds"] + 60)
    assert item["reason"].startswith("cancelled on GitHub before a runner")
    assert [e for e in client.timeline(job) if e["event"] == "launching"] == launched, "no new attempt"
    assert_nothing_left(job)


def test_a_spot_interruption_mid_job_is_recorded_with_its_reason(job_ids):
    job = queue(job_ids, behaviour={"spot_interruption": [1], "stop_grace_seconds": 1})
    # GitHub fails the job (runner lost) and ECS reports the stop: whichever reaches the waiting
    # execution first ends it — `failed` with the stop reason, or `completed` with GitHub's
    # `failure` — and the stop reason is on the job either way.
    item = client.wait_for_state(job, ["failed", "completed"], timeout=120)
    if item["state"] == "failed":
        assert "SpotInterruption" in item["reason"], item["reason"]
    else:
        assert item["conclusion"] == "failure"
    stopped = client.wait_until(lambda: (client.job_item(job) or {}).get("sig_stopped"), 30, what="the stop recorded")
    assert "SpotInterruption" in stopped["reason"], stopped
    assert last_row(job)["event"] == item["state"]
    assert_nothing_left(job)


def test_a_size_with_no_capacity_anywhere_falls_back_to_the_configured_larger_size(job_ids):
    # The local deploy config says sizes.fallback: {"medium": ["large"]}.
    medium = 2 * 3  # two AZs x (Fargate Spot, Fargate, EC2)
    job = client.queue_job(["self-hosted", "tasuki-medium"])
    job_ids.append(job)
    client.add_fault("capacity", job_id=job, times=medium)
    item = client.wait_for_state(job, "completed", timeout=180)
    launched = [e["candidate"] for e in client.timeline(job) if e["event"] == "launching"]
    assert len(launched) == medium + 1 and item["attempt"] == medium + 1
    assert all("/4cpu-8gb/" in c for c in launched[:medium])
    assert "/8cpu-16gb/" in launched[-1]
    [started] = [
        r for r in client.mock_state()["run_task_requests"] if str(r["job_id"]) == job and r["outcome"] == "started"
    ]
    assert started["attempt"] == medium + 1
    assert last_row(job)["event"] == "completed"
    assert_nothing_left(job)


def webhooks_for(job: str) -> list[dict]:
    return [w for w in client.mock_state()["webhooks_sent"] if str(w["job_id"]) == job]


def test_out_of_order_in_progress_before_queued_records_the_job_skipped_and_launches_nothing(job_ids):
    # The job's `queued` delivery fails; a runner tasuki launched for another job takes it, so
    # tasuki first hears of it from `in_progress`; the `queued` delivery arrives last (redelivered).
    victim = queue(job_ids, behaviour={"lose_queued": True})
    thief = queue(job_ids, behaviour={"assign_to": victim})
    item = client.wait_for_state(victim, "skipped", timeout=90)
    assert item["reason"] == (
        f"GitHub says the job runs on runner tasuki-{thief}-1 before tasuki launched a runner for it; none launched"
    )
    assert [w["action"] for w in webhooks_for(victim)][:2] == ["queued", "in_progress"]
    [lost] = [w for w in webhooks_for(victim) if w["action"] == "queued"]
    late = client.redeliver(lost["delivery_id"])
    assert (late["status"], late["body"]["reason"]) == (202, "already started")
    assert client.ecs_tasks_for_job(victim) == [], "nothing launched for it"
    client.wait_for_state(thief, "completed", timeout=120)
    client.wait_until(lambda: (client.job_item(victim) or {}).get("state") == "skipped", 5, what="still skipped")
    assert [e["event"] for e in client.timeline(victim)] == ["received", "planned", "skipped"]
    assert last_row(victim)["event"] == "skipped"
    [execution] = client.wait_for_executions_done(victim)
    assert execution["status"] == "SUCCEEDED"
    assert_nothing_left(victim)
    assert_nothing_left(thief)


def test_out_of_order_completed_before_queued_ends_the_job_without_a_runner(job_ids):
    victim = queue(job_ids, behaviour={"lose_queued": True})
    # GitHub cancels it before any runner took it; tasuki hears of it first from `completed`.
    assert client.cancel_job(victim)["status"] == 202
    item = client.wait_for_state(victim, "cancelled", timeout=60)
    assert item["reason"] == "cancelled on GitHub before a runner took it"
    [lost] = [w for w in webhooks_for(victim) if w["action"] == "queued"]
    assert client.redeliver(lost["delivery_id"])["status"] == 202
    assert client.executions_for_job(victim) and client.ecs_tasks_for_job(victim) == []
    assert last_row(victim)["event"] == "cancelled"
    assert_nothing_left(victim)


def test_capacity_failing_in_every_candidate_then_returning_serves_the_job_in_a_later_round(job_ids, config):
    client.add_fault("capacity")
    job = queue(job_ids)
    try:
        client.wait_until(
            lambda: "round 2 starts" in (last_row(job).get("reason") or ""), 60, interval=0.5, what="a lost round"
        )
    finally:
        client.clear_faults()
    item = client.wait_for_state(job, "completed", timeout=config["timeouts"]["capacity_wait_seconds"] + 90)
    timeline = client.timeline(job)
    failed = [e for e in timeline if e["event"] == "attempt-failed"]
    launched = [e["candidate"] for e in timeline if e["event"] == "launching"]
    assert item["attempt"] == len(failed) + 1 == len(launched)
    assert launched[-1] == launched[0], "the new round starts again from the first candidate"
    assert last_row(job)["event"] == "completed"
    assert_nothing_left(job)


def failures_in_history(job: str) -> list[dict]:
    """The failed Lambda tasks of the job's executions: the error name and cause the state machine saw."""
    failed = []
    for execution in client.executions_for_job(job):
        for event in client.execution_history(execution["executionArn"]):
            details = event.get("taskFailedEventDetails") or event.get("lambdaFunctionFailedEventDetails")
            if details:
                failed.append({"error": details.get("error"), "cause": details.get("cause") or ""})
    return failed


def matched(rule: dict) -> int:
    [now] = [r for r in client.github_faults() if r["id"] == rule["id"]]
    return now["matched"]


def test_github_5xx_on_generate_jitconfig_is_retried_by_the_state_machine_not_spent_as_an_attempt(job_ids):
    rule = client.add_github_fault("server_error", route="jit_repo", times=1)
    job = queue(job_ids)
    item = client.wait_for_state(job, "completed", timeout=120)
    assert item["attempt"] == 1, "a GitHub outage is no failed attempt"
    assert matched(rule) == 1
    [failure] = failures_in_history(job)
    assert failure["error"] == "Transient" and "generate-jitconfig: HTTP 502" in failure["cause"], failure
    assert "attempt-failed" not in [e["event"] for e in client.timeline(job)]
    assert last_row(job)["event"] == "completed"
    assert_nothing_left(job)


def test_github_429_with_a_short_retry_after_is_waited_out_inside_the_call(job_ids):
    rule = client.add_github_fault("secondary_rate_limit", route="jit_repo", status=429, retry_after=1)
    job = queue(job_ids)
    item = client.wait_for_state(job, "completed", timeout=120)
    assert (item["attempt"], matched(rule)) == (1, 1)
    assert failures_in_history(job) == [], "waited out by the adapter: the step did not fail"
    assert last_row(job)["event"] == "completed"
    assert_nothing_left(job)


def test_github_primary_rate_limit_is_throttled_with_the_budget_left_and_retried_with_backoff(job_ids):
    rule = client.add_github_fault("primary_rate_limit", route="jit_repo", retry_after=600)
    job = queue(job_ids)
    item = client.wait_for_state(job, "completed", timeout=120)
    assert (item["attempt"], matched(rule)) == (1, 1)
    [failure] = failures_in_history(job)
    assert failure["error"] == "Throttled", failure
    # the budget left is recorded in the execution's history
    assert "GitHub rate limit" in failure["cause"] and "0 of 5000 left" in failure["cause"], failure
    assert last_row(job)["event"] == "completed"
    assert_nothing_left(job)


def test_cancel_while_launching_leaves_no_task_and_no_runner(job_ids):
    job = queue(job_ids)
    # RunTask throttled three times: the job sits in `launching` for seconds (the ASL's backoff).
    client.add_fault("throttle", job_id=job, times=3)
    client.wait_until(lambda: last_row(job)["event"] == "launching", 30, interval=0.1, what="launching")
    assert client.cancel_job(job)["status"] == 202
    item = client.wait_for_state(job, "cancelled", timeout=90)
    assert item["reason"].startswith("cancelled on GitHub"), item["reason"]
    assert last_row(job)["event"] == "cancelled"
    client.wait_until(lambda: client.leftovers(job) == {"tasks": [], "runners": []}, 30, what="nothing left")
    assert_nothing_left(job)


def test_a_spot_interruption_of_an_opted_in_job_is_rerun_without_spot_once_its_run_completes(job_ids):
    labels = [*LABELS, "spot=rerun"]
    job = client.queue_job(labels, behaviour={"spot_interruption": [1], "stop_grace_seconds": 1})
    job_ids.append(job)
    item = client.wait_for_state(job, "interrupted", timeout=120)
    assert "Spot took its runner mid-job" in item["reason"], item["reason"]
    [launched] = [e["candidate"] for e in client.timeline(job) if e["event"] == "launching"]
    assert launched.startswith("fargate-spot/"), launched
    # The sweep re-runs it once GitHub says its run completed (a one-job run: at once).
    deadline = int(item["deadline"])
    client.wait_until(lambda: time.time() > deadline + 1, 30, what="the interrupted job overdue")
    report, function_error = client.invoke("rescue", client.scheduled_event())
    assert function_error is None, report
    [rescued] = [j for j in report["jobs"] if j["job_id"] == int(job)]
    assert (rescued["state"], rescued["action"]) == ("interrupted", "rerun"), rescued
    rerun_row = client.wait_for_state(job, "rerun", timeout=30)
    assert rerun_row["reason"] == "GitHub re-runs the job in its run's next attempt, without Spot"
    old = next(j for j in client.mock_state()["jobs"] if j["job_id"] == job)

    def rerun_job() -> str | None:
        found = [
            j["job_id"]
            for j in client.mock_state()["jobs"]
            if j["run_id"] == old["run_id"] and j["run_attempt"] == old["run_attempt"] + 1
        ]
        return found[0] if found else None

    new = client.wait_until(rerun_job, 30, what="GitHub's re-run job")
    job_ids.append(new)
    done = client.wait_for_state(new, "completed", timeout=120)
    assert (done["conclusion"], done["attempt"]) == ("success", 1)
    candidates = [e["candidate"] for e in client.timeline(new) if e["event"] == "launching"]
    assert candidates and not any(c.startswith("fargate-spot/") for c in candidates), candidates
    # Re-run at most once: the job stays `rerun`, the sweep has nothing more for it.
    report, _ = client.invoke("rescue", client.scheduled_event())
    assert not [j for j in report["jobs"] if j["job_id"] == int(job)]
    assert last_row(job)["event"] == "rerun"
    assert_nothing_left(job)
    assert_nothing_left(new)
