"""The rescue sweep (issue 10): jobs a lost webhook or a failed StartExecution left behind, found past
their deadline in the by-state-deadline index, checked against GitHub and rescued.

In AWS an EventBridge schedule runs the `rescue` Lambda every minute; the local stack has no
scheduler, so these tests run the sweep themselves: with the CLI exactly as README's "Operate" shows
it (`tasuki rescue [--dry-run] [--json]`, with `.tasuki/local.env`, whose TASUKI_CONFIG_FILE is the
runtime config the local Lambdas run with), and by invoking the `rescue` Lambda through the gateway
with a scheduled event, as EventBridge does. Each test asserts the job's last lifecycle row, that no
task is left running and that no runner tasuki registered is left behind (the fault matrix's style).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness import client
from harness.common import LOCAL_CONFIG_FILE

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "target" / "debug" / "tasuki"
LABELS = ["self-hosted", "tasuki-2cpu-4gb"]
LIFECYCLE = ["received", "planned", "launching", "waiting-for-registration", "running", "completed"]
STARTED = "rescue: the job was recorded but its execution had not started; started it"


def queue(job_ids: list[str], **kwargs: Any) -> str:
    job = client.queue_job(LABELS, **kwargs)
    job_ids.append(job)
    return job


def events(job: str) -> list[str]:
    return [e["event"] for e in client.timeline(job)]


def last_row(job: str) -> dict:
    return client.timeline(job)[-1]


def assert_nothing_left(job: str) -> None:
    assert client.leftovers(job) == {"tasks": [], "runners": []}


def tasuki(*args: str, exit_code: int = 0) -> str:
    """`tasuki <args>` with `.tasuki/local.env` sourced, as README's "Operate" runs it; its stdout."""
    env = {**os.environ, **client.env()}
    env.pop("TASUKI_CONFIG", None)  # it would win over TASUKI_CONFIG_FILE
    assert env["TASUKI_CONFIG_FILE"] == str(LOCAL_CONFIG_FILE), "the local Lambdas' runtime config"
    run = subprocess.run([str(CLI), *args], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == exit_code, f"tasuki {' '.join(args)}: exit {run.returncode}\n{run.stderr}"
    return run.stdout


def swept(report: dict, job: str) -> dict | None:
    return next((j for j in report["jobs"] if str(j["job_id"]) == job), None)


def github_job(job: str) -> dict:
    return next(j for j in client.mock_state()["jobs"] if j["job_id"] == job)


def throttled_start(job_ids: list[str]) -> dict[str, Any]:
    """Queues a job while every StartExecution is throttled; the webhook's answer."""
    client.add_fault("start_execution_throttle")
    try:
        answer = client.queue_job_full(LABELS)
    finally:
        client.clear_faults()
    job_ids.append(str(answer["job_id"]))
    return answer


def test_a_job_whose_start_execution_failed_is_started_by_the_rescue_sweep(job_ids, config):
    # Every StartExecution of the webhook (the SDK retries a throttle itself) is throttled: the
    # webhook answers 500 and GitHub does not redeliver by itself.
    answer = throttled_start(job_ids)
    job = str(answer["job_id"])
    assert (answer["status"], answer["body"]["status_text"], answer["body"]["reason"]) == (500, "error", "Throttled")
    throttled = [r["outcome"] for r in client.mock_state()["start_execution_requests"] if r["job_id"] == job]
    assert throttled and set(throttled) == {"throttle"}, throttled
    recorded = client.job_item(job)
    assert recorded is not None and recorded["state"] == "received"
    assert events(job) == ["received"] and client.executions_for_job(job) == []

    # Past timeouts.rescue_grace_seconds (5 s locally) the sweep sees it; --dry-run says what it would do.
    grace = config["timeouts"]["rescue_grace_seconds"]
    plan = client.wait_until(
        lambda: swept(json.loads(tasuki("rescue", "--dry-run", "--json")), job),
        timeout=grace + 30,
        interval=1,
        what=f"job {job} overdue",
    )
    assert plan == {"job_id": int(job), "state": "received", "action": "start-execution", "reason": STARTED}
    text = tasuki("rescue", "--dry-run")
    assert "(dry run: nothing changed)" in text.splitlines()[0], text
    assert re.search(rf"^\s+{job}\s+received\s+start-execution\s+{re.escape(STARTED)}$", text, re.M), text
    assert client.job_item(job) == recorded, "a dry run changes nothing"
    assert events(job) == ["received"] and client.executions_for_job(job) == []

    text = tasuki("rescue")
    assert "dry run" not in text and re.search(rf"^\s+{job}\s+received\s+start-execution\s", text, re.M), text
    item = client.wait_for_state(job, "completed", timeout=120)
    assert (item["attempt"], item["conclusion"]) == (1, "success")
    timeline = client.timeline(job)
    [rescued] = [e for e in timeline if e["event"] == "rescued"]
    assert rescued["reason"] == STARTED
    assert [e["event"] for e in timeline if e["event"] != "rescued"] == LIFECYCLE
    assert last_row(job)["event"] == "completed"
    starts = [r["outcome"] for r in client.mock_state()["start_execution_requests"] if r["job_id"] == job]
    assert starts == throttled + ["started"], "one StartExecution, the sweep's"
    [execution] = client.wait_for_executions_done(job)
    assert execution["status"] == "SUCCEEDED"
    assert swept(json.loads(tasuki("rescue", "--dry-run", "--json")), job) is None, "finished: not overdue"
    assert_nothing_left(job)


def test_a_lost_completed_delivery_is_recorded_by_the_rescue_lambda(job_ids, config):
    job = queue(job_ids, behaviour={"lose_completed": True})
    client.wait_for_state(job, "running", timeout=60)
    # GitHub has the job completed and its runner removed; the runner's task exited 0, which
    # ecs-events records as a clean exit: nothing tells the waiting execution.
    client.wait_until(lambda: github_job(job)["status"] == "completed", 30, what=f"job {job} done on GitHub")
    client.wait_until(
        lambda: [t["lastStatus"] for t in client.ecs_tasks_for_job(job)] == ["STOPPED"], 30, what="task stopped"
    )
    client.wait_until(
        lambda: [e for e in client.mock_state()["ecs_events_sent"] if e["started_by"] == f"tasuki/{job}/1"],
        30,
        what="ECS task stop event delivered",
    )
    item = client.job_item(job)
    assert item is not None and item["state"] == "running"
    reached = [
        w["action"] for w in client.mock_state()["webhooks_sent"] if str(w["job_id"]) == job and w["status"] < 300
    ]
    assert reached == ["queued", "in_progress"], "the completed delivery failed"

    # The sweep checks an unfinished job rescue_grace_seconds (5 s locally) after its last change,
    # well before its completion wait would time out: wait for that deadline to pass.
    deadline = int(item["deadline"])
    client.wait_until(
        lambda: time.time() > deadline + 1, config["timeouts"]["rescue_grace_seconds"] + 10, what="overdue"
    )
    assert deadline < time.time() < deadline + config["timeouts"]["job_seconds"]

    # What EventBridge does every minute: invoke `rescue` with a scheduled event.
    report, function_error = client.invoke("rescue", client.scheduled_event())
    assert function_error is None, report
    assert report["dry_run"] is False and report["overdue"] >= 1
    reason = "rescue: GitHub says the job completed (success); the webhook was lost"
    assert swept(report, job) == {"job_id": int(job), "state": "running", "action": "signal", "reason": reason}

    item = client.wait_for_state(job, "completed", timeout=60)
    assert (item["attempt"], item["conclusion"]) == (1, "success")
    timeline = client.timeline(job)
    [rescued] = [e for e in timeline if e["event"] == "rescued"]
    assert (rescued["state"], rescued["reason"]) == ("running", reason)
    assert [e["event"] for e in timeline if e["event"] != "rescued"] == LIFECYCLE
    assert last_row(job)["event"] == "completed"
    [execution] = client.wait_for_executions_done(job)
    assert execution["status"] == "SUCCEEDED"
    assert_nothing_left(job)


def start_execution_failed(job_ids: list[str]) -> str:
    """A job whose webhook's StartExecution was throttled: recorded `received`, no execution."""
    answer = throttled_start(job_ids)
    job = str(answer["job_id"])
    assert answer["status"] == 500 and events(job) == ["received"]
    return job


def wait_overdue(job: str, config: dict) -> None:
    item = client.job_item(job)
    assert item is not None, f"job {job} is recorded"
    deadline = int(item["deadline"])
    client.wait_until(
        lambda: time.time() > deadline + 1, config["timeouts"]["rescue_grace_seconds"] + 15, what=f"job {job} overdue"
    )


def sweeps_at_once(count: int) -> list[dict]:
    """`count` sweeps started together: the `rescue` Lambda as EventBridge invokes it, and the CLI."""

    def lambda_sweep() -> dict:
        report, function_error = client.invoke("rescue", client.scheduled_event())
        assert function_error is None, report
        return report

    def cli_sweep() -> dict:
        return json.loads(tasuki("rescue", "--json"))

    calls = [cli_sweep if i % 2 else lambda_sweep for i in range(count)]
    with ThreadPoolExecutor(count) as pool:
        return [f.result() for f in [pool.submit(call) for call in calls]]


def test_two_sweeps_at_once_start_one_execution_and_write_one_rescue_row(job_ids, config):
    job = start_execution_failed(job_ids)
    wait_overdue(job, config)
    reports = sweeps_at_once(3)
    actions = [entry["action"] for r in reports if (entry := swept(r, job))]
    assert actions.count("start-execution") == 1, actions
    assert set(actions) <= {"start-execution", "leave"}, "a sweep that lost the race leaves the job"
    item = client.wait_for_state(job, "completed", timeout=120)
    assert (item["attempt"], item["conclusion"]) == (1, "success")
    assert events(job).count("rescued") == 1
    starts = [r["outcome"] for r in client.mock_state()["start_execution_requests"] if r["job_id"] == job]
    assert starts.count("started") == 1, starts
    assert len(client.executions_for_job(job)) == 1
    assert last_row(job)["event"] == "completed"
    assert_nothing_left(job)


def test_a_sweep_racing_the_completed_callback_records_one_completion(job_ids, config):
    job = queue(job_ids, behaviour={"hold": True})
    client.wait_for_state(job, "running", timeout=60)
    wait_overdue(job, config)
    # GitHub completes the job (its `completed` delivery goes to the webhook) while two sweeps,
    # which ask GitHub and find it completed, run: every interleaving must end the same way.
    with ThreadPoolExecutor(3) as pool:
        completing = pool.submit(client.complete_job, job, "success")
        sweeping = pool.submit(sweeps_at_once, 2)
        completing.result()
        reports = sweeping.result()
    actions = [entry["action"] for r in reports if (entry := swept(r, job))]
    assert "error" not in actions, reports
    item = client.wait_for_state(job, "completed", timeout=60)
    assert (item["attempt"], item["conclusion"]) == (1, "success")
    timeline = events(job)
    assert timeline.count("completed") == 1 and timeline.count("rescued") <= 1, timeline
    [execution] = client.wait_for_executions_done(job)
    assert execution["status"] == "SUCCEEDED"
    assert_nothing_left(job)


def test_an_aborted_execution_is_finished_by_the_sweep_and_its_task_and_runner_released(job_ids, config):
    job = queue(job_ids, behaviour={"never_register": [1]})
    client.wait_for_state(job, "waiting-for-registration", timeout=60)
    [execution] = client.executions_for_job(job)
    sfn = client.boto("stepfunctions")
    sfn.stop_execution(executionArn=execution["executionArn"], error="Operator", cause="aborted by hand")
    # AWS ends it ABORTED at once; moto's interpreter stops at its next event and says FAILED.
    status = client.wait_until(
        lambda: (s := sfn.describe_execution(executionArn=execution["executionArn"])["status"]) != "RUNNING" and s,
        30,
        what="execution ended",
    )
    [task] = client.ecs_tasks_for_job(job)
    assert task["desiredStatus"] == "RUNNING", "nobody else stops it now"
    assert (client.job_item(job) or {}).get("state") == "waiting-for-registration"
    wait_overdue(job, config)
    report, function_error = client.invoke("rescue", client.scheduled_event())
    assert function_error is None, report
    reason = (
        f"rescue: its execution ended {status} without finishing the job; its task is stopped and its runner deleted"
    )
    assert swept(report, job) == {
        "job_id": int(job),
        "state": "waiting-for-registration",
        "action": "finish",
        "reason": reason,
    }
    item = client.job_item(job)
    assert item is not None and (item["state"], item["reason"]) == ("failed", reason)
    assert (last_row(job)["event"], last_row(job)["reason"]) == ("failed", reason)
    client.wait_until(lambda: client.leftovers(job) == {"tasks": [], "runners": []}, 30, what="released")


def delivery_log(job: str) -> list[dict]:
    return [w for w in client.mock_state()["webhooks_sent"] if str(w["job_id"]) == job]


def test_a_lost_queued_delivery_is_redelivered_by_the_sweep_and_the_job_runs(job_ids, config):
    job = queue(job_ids, behaviour={"lose_queued": True})
    assert client.job_item(job) is None, "tasuki never heard of it"
    [lost] = delivery_log(job)
    assert lost["action"] == "queued" and not 200 <= lost["status"] < 300
    report, function_error = client.invoke("rescue", client.scheduled_event())
    assert function_error is None, report
    [redelivery] = [d for d in report["lost_queued"] if d["job_id"] == int(job)]
    assert redelivery["action"] == "redeliver"
    assert f"{lost['delivery_id']} never reached the webhook (1 failed attempt(s))" in redelivery["reason"]
    item = client.wait_for_state(job, "completed", timeout=120)
    assert (item["attempt"], item["conclusion"]) == (1, "success")
    queued = [w for w in delivery_log(job) if w["action"] == "queued"]
    assert [w["delivery_id"] for w in queued] == [lost["delivery_id"]] * 2, "the same delivery, redelivered"
    assert events(job) == LIFECYCLE
    # Received once: the next sweep has nothing to redeliver for it.
    report, _ = client.invoke("rescue", client.scheduled_event())
    assert not [d for d in report["lost_queued"] if d["job_id"] == int(job)]
    assert_nothing_left(job)


def test_a_job_cancelled_before_its_execution_started_is_started_by_the_sweep_and_launches_nothing(job_ids, config):
    job = start_execution_failed(job_ids)
    # GitHub cancels it while tasuki holds it `received`: the cancel is recorded on the job.
    assert client.cancel_job(job)["status"] == 202
    wait_overdue(job, config)
    report, function_error = client.invoke("rescue", client.scheduled_event())
    assert function_error is None, report
    [rescued] = [j for j in report["jobs"] if j["job_id"] == int(job)]
    assert rescued["action"] == "start-execution"
    item = client.wait_for_state(job, "cancelled", timeout=60)
    assert item["reason"] == "cancelled on GitHub before a runner took it"
    assert [r for r in client.mock_state()["run_task_requests"] if str(r["job_id"]) == job] == []
    assert "launching" not in events(job), "no attempt started"
    assert last_row(job)["event"] == "cancelled"
    assert_nothing_left(job)


def test_tasuki_explain_names_the_candidates_a_job_is_then_launched_on_and_refusals_exit_1(job_ids):
    text = tasuki("explain", "self-hosted", "tasuki-4cpu-8gb", "arm64")
    assert text.startswith("runner: 4cpu-8gb arm64, Spot allowed\n"), text
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    shown = readme.split("On the local stack (whose config", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    assert text == shown, "README shows the real output"
    assert re.search(r"^\s+1\. fargate-spot/\S+/4cpu-8gb/arm64$", text, re.M), text
    plan = json.loads(tasuki("explain", *LABELS, "--json"))
    assert plan["verdict"] == "accepted" and plan["spec"]["size"] == "2cpu-4gb", plan
    # What explain says comes first is where a real job with those labels is launched.
    job = queue(job_ids)
    client.wait_for_state(job, "completed", timeout=120)
    [launched] = [e["candidate"] for e in client.timeline(job) if e["event"] == "launching"]
    assert launched == plan["candidates"][0]
    refused = tasuki("explain", "tasuki", "gpu", exit_code=1)
    assert refused == "refused: label `gpu` is not one tasuki serves\n"
    assert json.loads(tasuki("explain", "self-hosted", "--json", exit_code=1)) == {"verdict": "not-ours"}
