"""Issue 8: what a real AWS account and GitHub do that the local stack used to be kinder about.

Each test here failed on the code before issue 8's fix, because the simulators now answer as the
services do: GitHub's JIT configs are ~4.2 KB (KMS Encrypt takes 4 096 bytes), ECS refuses tag
characters outside its set and overrides over 8 192 characters, account quotas fail RunTask, and the
runner's exit status follows run.sh through tasuki-boot.
"""

from __future__ import annotations

import base64

from harness import client

LABELS = ["self-hosted", "tasuki-2cpu-4gb"]
QUOTA = "You've reached the limit on the number of vCPUs you can run concurrently"


def candidates_per_round(config: dict) -> int:
    """x64, no docker: every configured capacity (EC2 only with an x64 provider) × every AZ."""
    capacities = [c for c in config["capacity_order"] if c != "ec2" or "x64" in config["ecs"]["ec2_capacity_providers"]]
    return len(capacities) * len(config["network"]["subnets"])


def grants_named(config: dict, prefix: str) -> list[dict]:
    kms = client.boto("kms")
    grants = kms.list_grants(KeyId=config["runner"]["kms_key_id"])["Grants"]
    return [g for g in grants if str(g.get("Name", "")).startswith(prefix)]


def test_a_real_size_jit_config_is_sealed_fits_runtask_and_its_grant_is_revoked(job_ids, config):
    """Defect 3 (and 11): GitHub's config is over KMS Encrypt's 4 096 bytes; the runner task may open
    it only through the job's grant, which is gone once the job is."""
    job = client.queue_job(LABELS)
    job_ids.append(job)
    item = client.wait_for_state(job, "completed", timeout=120)
    assert item["conclusion"] == "success"
    runner = [r for r in client.mock_state()["runners"] if r["name"] == f"tasuki-{job}-1"][0]
    issued = [s for s in client.secrets_for_leak_check() if s.startswith("ey")]
    assert any(len(s) > 4096 for s in issued), "the mock issues real-size configs"
    [request] = [r for r in client.mock_state()["run_task_requests"] if r["job_id"] == job]
    assert request["outcome"] == "started"
    assert "TASUKI_JIT_CONFIG_SEALED" in request["env_names"]
    assert request["overrides_chars"] <= 8192
    assert runner["booted"], "the simulated runner opened the sealed config through the job's grant"
    assert grants_named(config, f"tasuki-{job}-") == [], "the job's grant is revoked"
    assert client.leak_report([job], logs=True) == []


def test_a_workflow_name_ecs_refuses_as_a_tag_value_is_sanitized_in_the_tags_and_kept_raw(job_ids):
    """Defect 4: `(`, `,`, `&`, `#`, `'`, `!` are not ECS tag characters."""
    name = "Build (linux, x64) & test #1 'fast'!"
    job = client.queue_job(LABELS, behaviour={"workflow_name": name})
    job_ids.append(job)
    item = client.wait_for_state(job, "completed", timeout=120)
    assert item["workflow"] == name, "the raw name stays in the lifecycle table"
    [task] = client.ecs_tasks_for_job(job)
    tags = {t["key"]: t["value"] for t in task.get("tags", [])}
    assert tags["tasuki:workflow"] == "Build _linux_ x64_ _ test _1 _fast__"


def test_account_quotas_move_on_to_the_next_candidate_then_wait_for_a_new_round(job_ids, config):
    """Defect 5: quota errors were LaunchConfigError and failed the job at once."""
    per_round = candidates_per_round(config)
    wait = config["timeouts"]["capacity_wait_seconds"]
    assert 0 < wait <= 10, "the local deploy config keeps the capacity wait short"
    client.add_fault("cpu_limit", times=1)
    client.add_fault("quota", times=per_round - 1)
    job = client.queue_job(LABELS)
    job_ids.append(job)
    item = client.wait_for_state(job, "completed", timeout=180)
    assert item["attempt"] == per_round + 1, "the second round's first candidate ran the job"
    failed = [e for e in client.timeline(job) if e["event"] == "attempt-failed"]
    assert [e["attempt"] for e in failed] == list(range(1, per_round + 1))
    assert all(e["reason"].startswith("QuotaExceeded") for e in failed), failed
    assert "above your limit" in failed[0]["reason"] and QUOTA in failed[1]["reason"]
    assert failed[-1]["reason"].endswith(f"every candidate tried: round 2 starts in {wait} s")
    [execution] = client.wait_for_executions_done(job)
    entered = [
        e["stateEnteredEventDetails"]["name"]
        for e in client.execution_history(execution["executionArn"])
        if e["type"].endswith("StateEntered")
    ]
    assert entered.count("WaitForCapacity") == 1


def test_a_deprecated_runner_version_fails_the_attempt_with_the_fix_named(job_ids):
    """Defect 7: an outdated image must not loop; the attempt's reason says what to do."""
    job = client.queue_job(LABELS, behaviour={"version_deprecated": [1]})
    job_ids.append(job)
    item = client.wait_for_state(job, "completed", timeout=120)
    assert item["attempt"] == 2
    [failed] = [e for e in client.timeline(job) if e["event"] == "attempt-failed"]
    assert failed["reason"].startswith("TaskStopped: RunnerVersionDeprecated"), failed["reason"]
    assert "RUNNER_VERSION" in failed["reason"] and "runner exit 81" in failed["reason"]


def test_the_runner_task_may_open_only_its_own_jobs_config_and_only_while_the_job_lives(job_ids, config):
    """Defect 11: the runner task role cannot open another job's data key (no standing Decrypt)."""
    job = client.queue_job(LABELS, behaviour={"hold": True})
    job_ids.append(job)
    client.wait_for_state(job, "running", timeout=120)
    [request] = [r for r in client.mock_state()["run_task_requests"] if r["job_id"] == job]
    [grant] = grants_named(config, f"tasuki-{job}-")
    assert grant["GranteePrincipal"] == config["runner"]["task_role_arn"]
    assert grant["Operations"] == ["Decrypt"]
    assert grant["Constraints"] == {"EncryptionContextEquals": {"tasuki:job-id": job}}
    [task] = client.ecs_tasks_for_job(job)
    env = {e["name"]: e["value"] for e in task["overrides"]["containerOverrides"][0]["environment"]}
    sealed = base64.b64decode(env["TASUKI_JIT_CONFIG_SEALED"])
    assert sealed[:4] == b"TSK1" and request["task_arn"] == task["taskArn"]
    client.complete_job(job)
    client.wait_for_state(job, "completed", timeout=60)
    assert grants_named(config, f"tasuki-{job}-") == []
