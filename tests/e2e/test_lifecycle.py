"""The job lifecycle end to end: webhook → Step Functions (the real ASL) → ECS → DynamoDB audit."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

from harness import client

REPO = Path(__file__).resolve().parents[2]
LABELS = ["self-hosted", "tasuki-2cpu-4gb"]
CAPACITY_REASON = "Capacity is unavailable at this time"


def events(job_id: str) -> list[str]:
    return [e["event"] for e in client.timeline(job_id)]


def queue(job_ids: list[str], labels=LABELS, **kwargs) -> str:
    job = client.queue_job(labels, **kwargs)
    job_ids.append(job)
    return job


def runners_named(prefix: str) -> list[dict]:
    return [r for r in client.mock_state()["runners"] if r["name"].startswith(prefix)]


def registration_wait(config: dict) -> float:
    return config["timeouts"]["registration_seconds"] + 60


def test_a_queued_job_runs_one_task_and_completes(job_ids):
    job = queue(job_ids)
    item = client.wait_for_state(job, "completed", timeout=120)
    assert item["conclusion"] == "success"
    assert item["attempt"] == 1
    assert events(job) == ["received", "planned", "launching", "waiting-for-registration", "running", "completed"]
    launching = client.timeline(job)[2]
    assert launching["candidate"].startswith("fargate-spot/us-east-1a/2cpu-4gb/x64")
    tasks = client.ecs_tasks_for_job(job)
    assert len(tasks) == 1
    tags = {t["key"]: t["value"] for t in tasks[0].get("tags", [])}
    assert tags["tasuki:job-id"] == job and tags["tasuki:size"] == "2cpu-4gb"
    [execution] = client.wait_for_executions_done(job)
    assert execution["status"] == "SUCCEEDED"
    assert item.get("gsi_state") is None, "finished jobs leave the state/deadline index"


def test_the_same_delivery_twice_and_the_same_job_queued_twice_start_one_execution_and_one_task(job_ids):
    first = client.queue_job_full(LABELS)
    job = str(first["job_id"])
    job_ids.append(job)
    assert first["status"] == 202
    again = client.redeliver(first["delivery_id"])
    assert again["status"] == 202
    requeued = client.queue_again(job)
    assert requeued["status"] == 202
    client.wait_for_state(job, "completed", timeout=120)
    assert len(client.executions_for_job(job)) == 1
    assert len(client.ecs_tasks_for_job(job)) == 1
    assert events(job).count("received") == 1


def fixture_body(labels: list[str], job_id: int) -> bytes:
    payload = json.loads((REPO / "tests/fixtures/webhooks/workflow_job.queued.2.json").read_text())
    payload["workflow_job"]["labels"] = labels
    payload["workflow_job"]["id"] = job_id
    payload["repository"]["private"] = True
    return json.dumps(payload).encode()


def headers(body: bytes, signature: str | None, event: str = "workflow_job") -> dict[str, str]:
    h = {"Content-Type": "application/json", "X-GitHub-Event": event, "X-GitHub-Delivery": str(uuid.uuid4())}
    if signature is not None:
        h["X-Hub-Signature-256"] = signature
    return h


def nothing_written(job_id: int) -> None:
    assert client.job_item(str(job_id)) is None
    assert client.timeline(str(job_id)) == []
    assert client.executions_for_job(str(job_id)) == []


def test_a_bad_or_missing_signature_is_401_and_writes_nothing():
    job_id = 7_000_000_000 + uuid.uuid4().int % 1_000_000
    body = fixture_body(LABELS, job_id)
    status, answer = client.send_raw_webhook(body, headers(body, None))
    assert status == 401 and "missing" in answer["reason"]
    status, _ = client.send_raw_webhook(body, headers(body, "sha256=" + "0" * 64))
    assert status == 401
    tampered = body.replace(b"tasuki-2cpu-4gb", b"tasuki-4cpu-8gb")
    status, _ = client.send_raw_webhook(tampered, headers(tampered, client.sign(body)))
    assert status == 401
    nothing_written(job_id)


def test_a_malformed_body_is_400_and_writes_nothing():
    for body in (b"{not json", b'{"action": "queued"}', b'{"action":"queued","workflow_job":{"id":"x"}}'):
        status, answer = client.send_raw_webhook(body, headers(body, client.sign(body)))
        assert status == 400, (body, answer)
        assert answer["status_text"] == "malformed"


def test_pings_and_jobs_without_our_labels_are_ignored(job_ids):
    job_id = 7_100_000_000 + uuid.uuid4().int % 1_000_000
    body = fixture_body(["self-hosted", "k8s"], job_id)
    status, answer = client.send_raw_webhook(body, headers(body, client.sign(body)))
    assert status == 200 and answer["status_text"] == "ignored"
    nothing_written(job_id)
    ping = (REPO / "tests/fixtures/webhooks/ping.event.1.json").read_bytes()
    status, answer = client.send_raw_webhook(ping, headers(ping, client.sign(ping), event="ping"))
    assert (status, answer["reason"]) == (200, "pong")


def test_labels_we_cannot_serve_are_refused_with_the_label_named_and_no_task(job_ids):
    for labels, named in (
        (["self-hosted", "tasuki", "gpu"], "`gpu`"),
        (["self-hosted", "tasuki-3cpu-1gb"], "`tasuki-3cpu-1gb`"),
        (["tasuki", "sg-0123456789abcdef0"], "`sg-0123456789abcdef0`"),
    ):
        job = queue(job_ids, labels)
        item = client.wait_for_state(job, "refused", timeout=60)
        assert named in item["reason"], item["reason"]
        assert events(job) == ["received", "refused"]
        assert client.ecs_tasks_for_job(job) == []
        assert client.wait_for_executions_done(job)[0]["status"] == "SUCCEEDED"


def test_a_public_repository_is_refused(job_ids):
    job = queue(job_ids, private=False)
    item = client.wait_for_state(job, "refused", timeout=60)
    assert "is public" in item["reason"]
    assert client.ecs_tasks_for_job(job) == []


def test_no_spot_capacity_in_the_first_az_falls_back_to_the_next_candidate(job_ids, config):
    first_az = config["network"]["subnets"]["us-east-1a"]
    client.add_fault("capacity", capacity_provider="FARGATE_SPOT", subnet=first_az)
    job = queue(job_ids)
    item = client.wait_for_state(job, "completed", timeout=120)
    assert item["attempt"] == 2
    timeline = client.timeline(job)
    assert [e["event"] for e in timeline] == [
        "received",
        "planned",
        "launching",
        "attempt-failed",
        "launching",
        "waiting-for-registration",
        "running",
        "completed",
    ]
    assert timeline[2]["candidate"].startswith("fargate-spot/us-east-1a")
    assert timeline[3]["reason"].startswith("CapacityUnavailable") and CAPACITY_REASON in timeline[3]["reason"]
    assert timeline[4]["candidate"].startswith("fargate-spot/us-east-1b")
    assert len(client.ecs_tasks_for_job(job)) == 1, "the failed RunTask started nothing"
    assert runners_named(f"tasuki-{job}-1")[0]["deleted"], "the unused runner of attempt 1 is deleted"


def test_a_runner_that_never_registers_times_out_is_cleaned_up_and_the_next_candidate_is_used(job_ids, config):
    job = queue(job_ids, behaviour={"never_register": [1]})
    item = client.wait_for_state(job, "completed", timeout=registration_wait(config) + 60)
    assert item["attempt"] == 2
    failed = [e for e in client.timeline(job) if e["event"] == "attempt-failed"]
    assert len(failed) == 1 and failed[0]["attempt"] == 1
    assert failed[0]["reason"].startswith("RegistrationTimeout")
    first, second = client.ecs_tasks_for_job(job)
    assert first["startedBy"] == f"tasuki/{job}/1" and first["desiredStatus"] == "STOPPED"
    assert second["startedBy"] == f"tasuki/{job}/2"
    assert runners_named(f"tasuki-{job}-1")[0]["deleted"]


def test_a_task_that_stops_before_registering_moves_on_with_the_stop_reason(job_ids):
    job = queue(job_ids, behaviour={"stop_early": [1]})
    item = client.wait_for_state(job, "completed", timeout=120)
    assert item["attempt"] == 2
    [failed] = [e for e in client.timeline(job) if e["event"] == "attempt-failed"]
    assert failed["reason"].startswith("TaskStopped") and "CannotPullContainerError" in failed["reason"]


def test_when_every_candidate_fails_for_capacity_the_job_waits_for_rounds_then_fails_with_every_reason(job_ids, config):
    client.add_fault("capacity")
    job = queue(job_ids)
    wait = config["timeouts"]["capacity_wait_seconds"]
    item = client.wait_for_state(job, "failed", timeout=180 + wait)
    timeline = client.timeline(job)
    planned = next(e for e in timeline if e["event"] == "planned")
    failed = [e for e in timeline if e["event"] == "attempt-failed"]
    launched = [e["candidate"] for e in timeline if e["event"] == "launching"]
    # The local horizon (capacity_wait_seconds, under the first 30 s backoff) buys one more round.
    per_round = len(set(launched))
    assert per_round >= 4 and len(failed) == len(launched) == 2 * per_round
    assert launched[:per_round] == launched[per_round:], "the second round retries the same candidates"
    assert [e["attempt"] for e in failed] == list(range(1, len(failed) + 1))
    assert all(CAPACITY_REASON in e["reason"] for e in failed)
    assert failed[per_round - 1]["reason"].endswith(f"round 2 starts in {wait} s")
    assert f"all {per_round} launch candidates failed in each of 2 rounds" in item["reason"]
    assert planned["state"] == "planned"
    assert client.ecs_tasks_for_job(job) == []
    [execution] = client.wait_for_executions_done(job)
    assert execution["status"] == "FAILED"


def test_a_job_cancelled_while_waiting_for_its_runner_stops_the_task_and_deletes_the_runner(job_ids):
    job = queue(job_ids, behaviour={"never_register": [1]})
    client.wait_for_state(job, "waiting-for-registration", timeout=60)
    assert client.cancel_job(job)["status"] == 202
    item = client.wait_for_state(job, "cancelled", timeout=60)
    assert "cancelled on GitHub" in item["reason"]
    [task] = client.ecs_tasks_for_job(job)
    assert task["desiredStatus"] == "STOPPED"
    assert runners_named(f"tasuki-{job}-1")[0]["deleted"]


def test_the_cli_prints_the_timeline_from_dynamodb(job_ids):
    job = queue(job_ids)
    client.wait_for_state(job, "completed", timeout=120)
    env = {**os.environ, **client.env()}
    cli = str(REPO / "target/debug/tasuki")
    shown = json.loads(
        subprocess.run(
            [cli, "jobs", "show", job, "--json"], env=env, check=True, capture_output=True, text=True, timeout=60
        ).stdout
    )
    assert shown["job"]["state"] == "completed"
    assert [e["event"] for e in shown["events"]] == events(job)
    text = subprocess.run(
        [cli, "jobs", "show", job], env=env, check=True, capture_output=True, text=True, timeout=60
    ).stdout
    assert "state: completed (attempt 1) · conclusion: success" in text
    listed = json.loads(
        subprocess.run(
            [cli, "jobs", "ls", "--json", "--limit", "500"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    )
    assert job in [str(j["job_id"]) for j in listed]
    missing = subprocess.run([cli, "jobs", "show", "1"], env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no job 1" in missing.stderr


def test_zz_no_secret_appears_in_logs_history_task_overrides_or_the_table(job_ids):
    assert job_ids, "runs after the lifecycle tests"
    assert client.leak_report(job_ids) == []


def test_a_runner_that_takes_another_queued_job_is_paired_by_job_and_its_own_job_gets_a_new_runner(job_ids, config):
    victim = queue(job_ids, behaviour={"never_register": [1]})
    client.wait_for_state(victim, "waiting-for-registration", timeout=60)
    thief = queue(job_ids, behaviour={"assign_to": victim})
    stolen = client.wait_for_state(victim, "completed", timeout=120)
    assert stolen["runner_name"] == f"tasuki-{thief}-1", "the job ran on the thief's runner"
    assert stolen["attempt"] == 1
    [victims_own] = client.ecs_tasks_for_job(victim)
    assert victims_own["desiredStatus"] == "STOPPED", "the idle runner launched for it is stopped"
    item = client.wait_for_state(thief, "completed", timeout=registration_wait(config) + 60)
    assert item["attempt"] == 2
    timeline = client.timeline(thief)
    [failed] = [e for e in timeline if e["event"] == "attempt-failed"]
    assert failed["reason"] == (
        f"RunnerTaken: runner tasuki-{thief}-1 took job {victim} instead;"
        " relaunching on the same candidate (1 of 3 relaunches)"
    )
    launches = [e["candidate"] for e in timeline if e["event"] == "launching"]
    assert len(launches) == 2 and launches[0] == launches[1], "a theft does not spend the candidate"
    assert runners_named(f"tasuki-{thief}-1")[0]["deleted_by"] != "api", "a busy runner is never deleted"


def test_a_long_job_whose_in_progress_delivery_was_lost_is_not_killed(job_ids, config):
    # Runs past timeouts.registration_seconds with GitHub's in_progress delivery lost: CleanupAttempt
    # asks GitHub (GET .../actions/jobs/{id}), which says the job runs, and the job is left running.
    job = queue(job_ids, behaviour={"hold": True, "lose_in_progress": True})
    item = client.wait_for_state(job, "running", timeout=registration_wait(config))
    assert item["attempt"] == 1 and item["runner_name"] == f"tasuki-{job}-1"
    [task] = client.ecs_tasks_for_job(job)
    assert task["desiredStatus"] == "RUNNING", "the task running the job was not stopped"
    assert not [e for e in client.timeline(job) if e["event"] == "attempt-failed"]
    client.complete_job(job, "success")
    item = client.wait_for_state(job, "completed", timeout=60)
    assert (item["attempt"], item["conclusion"]) == (1, "success")
    assert runners_named(f"tasuki-{job}-1")[0]["deleted_by"] != "api", "a busy runner is never deleted"


def test_a_lost_in_progress_webhook_does_not_strand_the_job(job_ids):
    job = queue(job_ids, behaviour={"lose_in_progress": True})
    item = client.wait_for_state(job, "completed", timeout=120)
    assert item["attempt"] == 1 and item["conclusion"] == "success"
    assert item["runner_name"] == f"tasuki-{job}-1"
    # GitHub's delivery log shows the in_progress attempt that failed; only queued and completed arrived.
    assert [(w["action"], w["status"]) for w in client.mock_state()["webhooks_sent"] if str(w["job_id"]) == job] == [
        ("queued", 202),
        ("in_progress", 502),
        ("completed", 202),
    ]
