"""Simulated runners: what an ECS task running the GitHub runner would do, and ECS's events.

Polls moto's ECS (directly) for tasks in the local cluster. For each new RUNNING task: KMS-decrypt
the JIT config from the `runner` container override (encryption context {"tasuki:job-id": job id}),
check it is a config the GitHub mock issued for that runner name, then act out the job's behaviour
(register, in_progress, completed, exit). For each task seen STOPPED (whoever stopped it), invoke the
`ecs-events` Lambda through the gateway with an EventBridge "ECS Task State Change" event, once.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from typing import Any

from harness.common import ACCOUNT_ID, CLUSTER_NAME, CONTAINER_NAME, REGION
from harness.github_mock import World
from harness.setup_aws import client

log = logging.getLogger("runner-sim")

POLL_SECONDS = 0.25
BOOT_SECONDS = 0.3
JOB_SECONDS = 1.0
MAX_HOLD_SECONDS = 3600.0
EXIT_REASON = "Essential container in task exited"
PULL_REASON = "CannotPullContainerError: pull access denied"
SPOT_REASON = "Your Spot Task was interrupted."


def iso(ts: float | None = None) -> str:
    dt = datetime.fromtimestamp(ts if ts is not None else time.time(), timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def container_env(task: dict[str, Any]) -> dict[str, str]:
    for co in (task.get("overrides") or {}).get("containerOverrides") or []:
        if co.get("name") == CONTAINER_NAME:
            return {e.get("name"): e.get("value") for e in co.get("environment") or []}
    return {}


class RunnerSimulator:
    def __init__(self, world: World, moto_port: int, gateway_port: int):
        self.world = world
        self.ledger = world.ledger
        self.gateway_port = gateway_port
        self.ecs = client("ecs", moto_port)
        self.kms = client("kms", moto_port)
        self.stop_flag = threading.Event()
        self.tasks: dict[str, dict[str, Any]] = {}  # taskArn -> {"stopped": Event, "event_sent": bool}
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.run, name="runner-sim", daemon=True)
        self.errors = 0

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(timeout=5)

    # ---- polling ----------------------------------------------------------------------------------
    def run(self) -> None:
        while not self.stop_flag.is_set():
            try:
                self.poll_once()
                self.errors = 0
            except Exception:
                self.errors += 1
                if self.errors <= 3 or self.errors % 100 == 0:
                    log.exception("poll failed (%d in a row)", self.errors)
            self.stop_flag.wait(POLL_SECONDS)

    def poll_once(self) -> None:
        arns: list[str] = []
        token = None
        for _ in range(100):  # bounded pagination
            kwargs: dict[str, Any] = {"cluster": CLUSTER_NAME, "maxResults": 100}
            if token:
                kwargs["nextToken"] = token
            page = self.ecs.list_tasks(**kwargs)
            arns += page.get("taskArns") or []
            token = page.get("nextToken")
            if not token:
                break
        with self.lock:
            todo = [a for a in arns if not self.tasks.get(a, {}).get("event_sent")]
        for i in range(0, len(todo), 100):
            chunk = todo[i : i + 100]
            for task in self.ecs.describe_tasks(cluster=CLUSTER_NAME, tasks=chunk).get("tasks") or []:
                if task.get("taskArn") in chunk:
                    self.observe(task)

    def observe(self, task: dict[str, Any]) -> None:
        arn = task["taskArn"]
        status = task.get("lastStatus")
        with self.lock:
            st = self.tasks.get(arn)
            new = st is None
            if new:
                st = self.tasks[arn] = {"stopped": threading.Event(), "event_sent": False}
        if status == "STOPPED":
            st["stopped"].set()
            with self.lock:
                send = not st["event_sent"]
                st["event_sent"] = True
            if send:
                threading.Thread(target=self.send_stopped_event, args=(task,), name="ecs-event", daemon=True).start()
        elif new and status == "RUNNING":
            threading.Thread(target=self.runner_lifecycle, args=(task, st["stopped"]), name="runner", daemon=True).start()

    # ---- one runner --------------------------------------------------------------------------------
    def note(self, kind: str, task: dict[str, Any], **extra: Any) -> None:
        entry = {"at": time.time(), "event": kind, "task_arn": task.get("taskArn"), "started_by": task.get("startedBy"), **extra}
        with self.world.lock:
            self.world.runner_events.append(entry)
        log.info("runner %s: %s %s", kind, task.get("startedBy"), {k: v for k, v in extra.items() if k != "detail"})

    def exit_task(self, task: dict[str, Any], stop_code: str, reason: str, exit_code: int | None) -> None:
        arn = task["taskArn"]
        self.ledger.note_stop(arn, stop_code, reason)
        self.ledger.note_task(arn, exitCode=exit_code)
        try:
            self.ecs.stop_task(cluster=CLUSTER_NAME, task=arn, reason=reason)
        except Exception as exc:
            log.warning("stop_task %s failed: %s", arn, exc)

    def boot_failure(self, task: dict[str, Any], why: str) -> None:
        self.note("boot-failed", task, reason=why)
        self.exit_task(task, "EssentialContainerExited", EXIT_REASON, 1)

    def runner_lifecycle(self, task: dict[str, Any], stopped: threading.Event) -> None:
        try:
            self._lifecycle(task, stopped)
        except Exception as exc:
            log.exception("runner lifecycle crashed for %s", task.get("taskArn"))
            self.note("sim-error", task, reason=str(exc))

    def _lifecycle(self, task: dict[str, Any], stopped: threading.Event) -> None:
        env = container_env(task)
        missing = [k for k in ("TASUKI_JOB_ID", "TASUKI_ATTEMPT", "TASUKI_RUNNER_NAME", "TASUKI_JIT_CONFIG_CIPHERTEXT") if not env.get(k)]
        if missing:
            self.boot_failure(task, f"missing container env {missing}")
            return
        job_id, runner_name = env["TASUKI_JOB_ID"], env["TASUKI_RUNNER_NAME"]
        try:
            attempt = int(env["TASUKI_ATTEMPT"])
        except ValueError:
            self.boot_failure(task, f"TASUKI_ATTEMPT is not a number: {env['TASUKI_ATTEMPT']!r}")
            return
        try:
            blob = base64.b64decode(env["TASUKI_JIT_CONFIG_CIPHERTEXT"], validate=True)
            plaintext = self.kms.decrypt(CiphertextBlob=blob, EncryptionContext={"tasuki:job-id": job_id})["Plaintext"]
        except Exception as exc:
            self.boot_failure(task, f"cannot KMS-decrypt the JIT config with context tasuki:job-id={job_id}: {type(exc).__name__}")
            return
        with self.world.lock:
            issued = self.world.jit_configs.get(runner_name)
        if issued is None or plaintext.decode(errors="replace") != issued:
            self.boot_failure(task, f"the decrypted JIT config is not the one issued for runner {runner_name}")
            return
        runner = self.world.runner_by_name(runner_name)
        with self.world.lock:
            runner["booted"] = True
            runner["task_arn"] = task["taskArn"]
            job = self.world.jobs.get(job_id)
            behaviour = dict(job["behaviour"]) if job else {}
        self.note("booted", task, runner=runner_name, job_id=job_id, attempt=attempt)

        if attempt in (behaviour.get("never_register") or []):
            self.note("never-registers", task, attempt=attempt)
            return
        if attempt in (behaviour.get("stop_early") or []):
            if stopped.wait(BOOT_SECONDS):
                return
            self.note("stopped-early", task, attempt=attempt)
            self.ledger.note_stop(task["taskArn"], "TaskFailedToStart", PULL_REASON)
            try:
                self.ecs.stop_task(cluster=CLUSTER_NAME, task=task["taskArn"], reason=PULL_REASON)
            except Exception as exc:
                log.warning("stop_task failed: %s", exc)
            return

        if stopped.wait(BOOT_SECONDS):
            return
        with self.world.lock:
            if runner["deleted"]:
                # deleted before it could connect: the runner fails to configure and exits
                pass
            else:
                runner["status"] = "online"
        if runner["deleted"]:
            self.boot_failure(task, "runner was deleted before it registered")
            return
        self.note("registered", task, runner=runner_name, runner_id=runner["id"])

        # Take the job it was launched for, if GitHub still has it queued -- or, with behaviour
        # `assign_to`, another job whose labels it matches while that one is still queued ("stolen" job).
        with self.world.lock:
            other = behaviour.get("assign_to")
            stolen = self.world.jobs.get(str(other)) if other is not None else None
            if stolen is not None and stolen["status"] == "queued":
                job_id = str(other)
                job = stolen
            take = job is not None and job["status"] == "queued"
            if take:
                job["status"] = "in_progress"
                job["runner_id"] = runner["id"]
                job["runner_name"] = runner_name
                runner["busy"] = True
                runner["job_id"] = job_id
        if not take:
            self.note("idle", task, runner=runner_name, reason="no queued job for this runner")
            stopped.wait(MAX_HOLD_SECONDS)
            with self.world.lock:
                runner["status"] = "offline"
            return

        if behaviour.get("lose_in_progress"):
            # GitHub gave up on the in_progress delivery: only `completed` will tell.
            self.note("in_progress webhook lost", task, runner=runner_name)
        else:
            self.world.deliver(job_id, "in_progress", self.world.derived_payload(job, "in_progress"))
        if attempt in (behaviour.get("spot_interruption") or []):
            if not stopped.wait(JOB_SECONDS / 2):
                self.note("spot-interrupted", task, attempt=attempt)
                self.exit_task(task, "SpotInterruption", SPOT_REASON, 143)
                stopped.wait(10)
        if behaviour.get("hold"):
            deadline = time.time() + MAX_HOLD_SECONDS
            while time.time() < deadline and not job["complete_event"].is_set() and not stopped.is_set():
                job["complete_event"].wait(0.25)
            conclusion = job["complete_conclusion"] or "success"
        else:
            stopped.wait(JOB_SECONDS)
            conclusion = behaviour.get("conclusion") or "success"

        if stopped.is_set() and not job["complete_event"].is_set():
            # the task was stopped under a running job: GitHub fails the job (runner lost)
            with self.world.lock:
                send = job["status"] != "completed"
                job["status"], job["conclusion"] = "completed", "failure"
                runner.update(status="offline", busy=False, deleted=True, deleted_by="github")
            self.note("lost", task, runner=runner_name)
            if send:
                self.world.deliver(job_id, "completed", self.world.derived_payload(job, "completed", "failure"))
            return

        with self.world.lock:
            send = job["status"] != "completed"  # a cancel already told the webhook
            if send:
                job["status"], job["conclusion"] = "completed", conclusion
        if send:
            self.world.deliver(job_id, "completed", self.world.derived_payload(job, "completed", conclusion))
        with self.world.lock:
            # a JIT runner is removed by GitHub once its job is done
            runner.update(status="offline", busy=False, deleted=True, deleted_by="github")
        self.note("exited", task, runner=runner_name, conclusion=job["conclusion"])
        self.exit_task(task, "EssentialContainerExited", EXIT_REASON, 0)

    # ---- ECS events ----------------------------------------------------------------------------------
    def send_stopped_event(self, task: dict[str, Any]) -> None:
        arn = task["taskArn"]
        meta = self.ledger.task_meta(arn)
        stop_code = meta.get("stopCode") or "UserInitiated"
        reason = task.get("stoppedReason") or meta.get("stoppedReason") or "Task stopped by user"
        stopped_at = meta.get("stoppedAt") or time.time()
        container: dict[str, Any] = {
            "containerArn": f"arn:aws:ecs:{REGION}:{ACCOUNT_ID}:container/{CLUSTER_NAME}/{arn.rsplit('/', 1)[-1]}/{uuid.uuid4()}",
            "name": CONTAINER_NAME,
            "lastStatus": "STOPPED",
            "taskArn": arn,
        }
        if stop_code == "TaskFailedToStart":
            container["reason"] = reason
        elif stop_code == "UserInitiated":
            container["exitCode"] = meta.get("exitCode", 143)
        else:
            container["exitCode"] = meta.get("exitCode", 0)
        detail = {
            "clusterArn": task.get("clusterArn"),
            "taskArn": arn,
            "lastStatus": "STOPPED",
            "desiredStatus": "STOPPED",
            "stopCode": stop_code,
            "stoppedReason": reason,
            "startedBy": task.get("startedBy"),
            "group": task.get("group"),
            "taskDefinitionArn": task.get("taskDefinitionArn"),
            "availabilityZone": meta.get("availabilityZone"),
            "capacityProviderName": meta.get("capacityProviderName"),
            "launchType": meta.get("launchType", task.get("launchType")),
            "cpu": (task.get("overrides") or {}).get("cpu"),
            "memory": (task.get("overrides") or {}).get("memory"),
            "overrides": task.get("overrides") or {},
            "attachments": task.get("attachments") or [],
            "containers": [container],
            "createdAt": iso(meta.get("createdAt")),
            "startedAt": iso(meta.get("startedAt")),
            "stoppingAt": iso(stopped_at),
            "stoppedAt": iso(stopped_at),
            "version": 3,
        }
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "ECS Task State Change",
            "source": "aws.ecs",
            "account": ACCOUNT_ID,
            "time": iso(),
            "region": REGION,
            "resources": [arn],
            "detail": detail,
        }
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.gateway_port}/2015-03-31/functions/ecs-events/invocations",
            data=json.dumps(event).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        function_error = None
        try:
            with urllib.request.urlopen(req, timeout=300) as resp:
                status, data = resp.status, resp.read()
                function_error = resp.headers.get("X-Amz-Function-Error")
        except urllib.error.HTTPError as exc:
            status, data = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            status, data = 0, json.dumps({"error": str(exc)}).encode()
        try:
            body = json.loads(data) if data else None
        except ValueError:
            body = {"raw": data[:2000].decode(errors="replace")}
        entry = {
            "at": time.time(),
            "task_arn": arn,
            "started_by": task.get("startedBy"),
            "stop_code": stop_code,
            "stopped_reason": reason,
            "status": status,
            "function_error": function_error,
            "body": body,
        }
        with self.world.lock:
            self.world.ecs_events_sent.append(entry)
        log.info("ecs-events %s (%s, %s) -> %s%s", task.get("startedBy"), stop_code, arn.rsplit("/", 1)[-1], status,
                 f" {function_error}" if function_error else "")
