"""Simulated runners: what an ECS task running tasuki-boot and the GitHub runner would do, and ECS's events.

Polls moto's ECS (directly) for tasks in the local cluster. For each new RUNNING task, as tasuki-boot
does (docs/contracts.md; functions/core/src/runner_contract.rs): read `TASUKI_JIT_CONFIG_SEALED` from
the `runner` container override, check the task role holds a live KMS grant for this job, unwrap the
data key with KMS (encryption context {"tasuki:job-id": job id}), open the AES-256-GCM envelope (job id
as AAD), check the config is the one the GitHub mock issued for that runner name, then act out the
job's behaviour (register, in_progress, completed, exit). For each task seen STOPPED (whoever stopped
it), invoke the `ecs-events` Lambda through the gateway with an EventBridge "ECS Task State Change"
event, once.

The container's exit status is tasuki-boot's (runner_contract::BootExit), never a status the boot
cannot produce. They follow the runner's own scripts (actions/runner src/Misc/layoutroot/run.sh and
run-helper.sh.template): run-helper.sh maps every Runner.Listener status to 0 (0 done, 1 terminated --
e.g. the registration was deleted --, 5 session conflict, unknown codes) except 2/3/4 (run.sh restarts
the listener) and 7 with ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1 (run.sh then exits 7);
run.sh exits 0 otherwise. tasuki-boot turns that into: 0 a job ran, 80 no job ran, 81 version
deprecated (run.sh 7), 82 a stop signal came during a job and the grace ran out, 83 a stop signal came
before any job, 84 run.sh failed otherwise; before the runner starts: 65, 69, 75, 77, 78 (sysexits).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
import zlib
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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

# tasuki-boot's exit statuses (contract section E; functions/core/src/runner_contract.rs BootExit)
EXIT_JOB_FINISHED = 0
EXIT_NO_JOB = 80
EXIT_VERSION_DEPRECATED = 81
EXIT_JOB_INTERRUPTED = 82
EXIT_STOPPED_BEFORE_JOB = 83
EXIT_RUNNER_FAILED = 84
EXIT_NOT_TEXT = 65
EXIT_KMS_REFUSED = 69
EXIT_KMS_UNAVAILABLE = 75
EXIT_WRONG_JOB = 77
EXIT_MISSING_CREDENTIAL = 78
BOOT_EXIT_CODES = {0, 80, 81, 82, 83, 84, 64, 65, 69, 70, 75, 77, 78, 126, 127}

# The sealed config (runner_contract.rs): base64("TSK1" | u16-BE wrapped-key length | wrapped key |
# 12-byte nonce | AES-256-GCM(ciphertext || tag)); plaintext = form byte | raw deflate(config);
# form 1 = the base64-decoded encoded_jit_config, 0 = its text; AAD = "tasuki:job-id=<job id>".
SEALED_MAGIC = b"TSK1"
NONCE_LEN = 12
MAX_OPENED_BYTES = 64 * 1024
KMS_TRANSIENT = {
    "ThrottlingException",
    "LimitExceededException",
    "KMSInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
    "RequestTimeout",
}


def stop_grace_seconds(behaviour: dict[str, Any]) -> float:
    """Seconds a running job gets after SIGTERM before tasuki-boot stops the runner and exits 82.
    Real tasks read TASUKI_STOP_GRACE_SECONDS (runner.stop_grace_seconds, default 100); the simulator
    uses a short one: behaviour `stop_grace_seconds`, else TASUKI_LOCAL_STOP_GRACE_SECONDS (1 s)."""
    raw = behaviour.get("stop_grace_seconds", os.environ.get("TASUKI_LOCAL_STOP_GRACE_SECONDS", "1"))
    try:
        return min(max(float(raw), 0.0), 110.0)
    except (TypeError, ValueError):
        return 1.0


def grant_wait_seconds() -> float:
    """How long the boot retries Decrypt without a grant (contract D: ~30 s; short here)."""
    try:
        return min(max(float(os.environ.get("TASUKI_LOCAL_GRANT_WAIT_SECONDS", "3")), 0.0), 30.0)
    except ValueError:
        return 3.0


class BootFailure(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def parse_sealed(sealed: str) -> tuple[bytes, bytes, bytes]:
    """(wrapped key, nonce, ciphertext) of a TASUKI_JIT_CONFIG_SEALED value."""
    try:
        raw = base64.b64decode(sealed.strip(), validate=True)
    except ValueError as exc:
        raise BootFailure(EXIT_MISSING_CREDENTIAL, "TASUKI_JIT_CONFIG_SEALED is not base64") from exc
    if not raw.startswith(SEALED_MAGIC):
        raise BootFailure(
            EXIT_MISSING_CREDENTIAL, "TASUKI_JIT_CONFIG_SEALED is not a tasuki sealed config (no TSK1 header)"
        )
    rest = raw[len(SEALED_MAGIC) :]
    if len(rest) < 2:
        raise BootFailure(EXIT_MISSING_CREDENTIAL, "TASUKI_JIT_CONFIG_SEALED is truncated")
    n = int.from_bytes(rest[:2], "big")
    rest = rest[2:]
    if len(rest) < n + NONCE_LEN + 16:
        raise BootFailure(EXIT_MISSING_CREDENTIAL, "TASUKI_JIT_CONFIG_SEALED is truncated")
    return rest[:n], rest[n : n + NONCE_LEN], rest[n + NONCE_LEN :]


def seal_jit_config(kms: Any, job_id: str, encoded_jit_config: str, key_id: str = "alias/tasuki-runner") -> str:
    """What run-task does (runner_contract::seal), for tests that launch a runner task by hand:
    a KMS data key for the job (GenerateDataKey, AES_256, context {"tasuki:job-id": job id}),
    AES-256-GCM over form byte | raw deflate(config), AAD "tasuki:job-id=<job id>"."""
    dk = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext={"tasuki:job-id": job_id})
    try:
        raw = base64.b64decode(encoded_jit_config, validate=True)
        form = 1 if base64.b64encode(raw).decode() == encoded_jit_config else 0
    except ValueError:
        form = 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = bytes([form]) + c.compress(raw if form else encoded_jit_config.encode()) + c.flush()
    nonce = os.urandom(NONCE_LEN)
    ct = AESGCM(dk["Plaintext"]).encrypt(nonce, payload, f"tasuki:job-id={job_id}".encode())
    wrapped = dk["CiphertextBlob"]
    return base64.b64encode(SEALED_MAGIC + len(wrapped).to_bytes(2, "big") + wrapped + nonce + ct).decode()


def grant_for_job(kms: Any, key_id: str, task_role_arn: str, job_id: str, attempt: int = 1) -> str:
    """What issue-token does (contract D): the task role may Decrypt under this job's context only."""
    key_arn = kms.describe_key(KeyId=key_id)["KeyMetadata"]["Arn"]
    return kms.create_grant(
        KeyId=key_arn,
        GranteePrincipal=task_role_arn,
        Operations=["Decrypt"],
        Constraints={"EncryptionContextEquals": {"tasuki:job-id": job_id}},
        Name=f"tasuki-{job_id}-{attempt}",
    )["GrantId"]


def open_sealed(job_id: str, data_key: bytes, nonce: bytes, ciphertext: bytes) -> str:
    """The encoded_jit_config GitHub issued, as tasuki-boot opens it."""
    if len(data_key) != 32:
        raise BootFailure(EXIT_WRONG_JOB, "the data key is not 32 bytes")
    try:
        payload = AESGCM(data_key).decrypt(nonce, ciphertext, f"tasuki:job-id={job_id}".encode())
    except InvalidTag as exc:
        raise BootFailure(EXIT_WRONG_JOB, f"the sealed config does not open for job {job_id}") from exc
    if not payload:
        raise BootFailure(EXIT_NOT_TEXT, "the opened config is empty")
    form, compressed = payload[0], payload[1:]
    try:
        d = zlib.decompressobj(-15)
        data = d.decompress(compressed, MAX_OPENED_BYTES)
        if d.unconsumed_tail:
            raise BootFailure(EXIT_NOT_TEXT, "the opened config exceeds 64 KiB")
    except zlib.error as exc:
        raise BootFailure(EXIT_NOT_TEXT, "the opened config does not decompress") from exc
    if form == 1:
        return base64.b64encode(data).decode()
    if form == 0:
        try:
            return data.decode()
        except UnicodeDecodeError as exc:
            raise BootFailure(EXIT_NOT_TEXT, "the opened config is not text") from exc
    raise BootFailure(EXIT_NOT_TEXT, f"unknown payload form {form}")


def iso(ts: float | None = None) -> str:
    dt = datetime.fromtimestamp(ts if ts is not None else time.time(), UTC)
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
            if st is None:
                st = self.tasks[arn] = {"stopped": threading.Event(), "event_sent": False, "phase": "booting"}
        if status == "STOPPED":
            st["stopped"].set()
            with self.lock:
                send = not st["event_sent"]
                st["event_sent"] = True
            if send:
                threading.Thread(target=self.send_stopped_event, args=(task,), name="ecs-event", daemon=True).start()
        elif new and status == "RUNNING":
            threading.Thread(
                target=self.runner_lifecycle, args=(task, st["stopped"]), name="runner", daemon=True
            ).start()

    # ---- one runner --------------------------------------------------------------------------------
    def note(self, kind: str, task: dict[str, Any], **extra: Any) -> None:
        entry = {
            "at": time.time(),
            "event": kind,
            "task_arn": task.get("taskArn"),
            "started_by": task.get("startedBy"),
            **extra,
        }
        with self.world.lock:
            self.world.runner_events.append(entry)
        log.info("runner %s: %s %s", kind, task.get("startedBy"), {k: v for k, v in extra.items() if k != "detail"})

    def phase(self, task: dict[str, Any], phase: str) -> None:
        """booting | idle (registered, no job) | job | exited: decides the status of a task stopped by others."""
        with self.lock:
            st = self.tasks.get(task["taskArn"])
            if st is not None:
                st["phase"] = phase

    def exit_task(self, task: dict[str, Any], stop_code: str, reason: str, exit_code: int | None) -> None:
        assert exit_code is None or exit_code in BOOT_EXIT_CODES, f"tasuki-boot never exits {exit_code}"
        arn = task["taskArn"]
        self.phase(task, "exited")
        self.ledger.note_stop(arn, stop_code, reason)
        self.ledger.note_task(arn, exitCode=exit_code)
        try:
            self.ecs.stop_task(cluster=CLUSTER_NAME, task=arn, reason=reason)
        except Exception as exc:
            log.warning("stop_task %s failed: %s", arn, exc)

    def boot_failure(self, task: dict[str, Any], why: str, code: int) -> None:
        self.note("boot-failed", task, reason=why, exit_code=code)
        self.exit_task(task, "EssentialContainerExited", EXIT_REASON, code)

    def runner_lifecycle(self, task: dict[str, Any], stopped: threading.Event) -> None:
        try:
            self._lifecycle(task, stopped)
        except Exception as exc:
            log.exception("runner lifecycle crashed for %s", task.get("taskArn"))
            self.note("sim-error", task, reason=str(exc))

    # ---- tasuki-boot: the credential ----------------------------------------------------------------
    def task_role_arn(self, task: dict[str, Any]) -> str | None:
        role = (task.get("overrides") or {}).get("taskRoleArn")
        if role:
            return role
        try:
            td = self.ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
        except Exception:
            return None
        return td.get("taskRoleArn")

    def live_grant(self, key_id: str, job_id: str, role: str | None) -> bool:
        """A grant lets the task role Decrypt under this job's encryption context only (contract D):
        without it the task role, which has no kms:Decrypt of its own, is refused."""
        key_arn = self.kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyId"]
        for g in self.kms.list_grants(KeyId=key_arn).get("Grants") or []:
            ctx = (g.get("Constraints") or {}).get("EncryptionContextEquals") or {}
            if (
                "Decrypt" in (g.get("Operations") or [])
                and ctx == {"tasuki:job-id": job_id}
                and (role is None or g.get("GranteePrincipal") == role)
            ):
                return True
        return False

    def open_credential(self, task: dict[str, Any], env: dict[str, str], job_id: str, stopped: threading.Event) -> str:
        """What tasuki-boot does before it starts the runner; BootFailure with its exit status otherwise."""
        wrapped, nonce, ciphertext = parse_sealed(env["TASUKI_JIT_CONFIG_SEALED"])
        key_id = env.get("TASUKI_KMS_KEY_ID") or "alias/tasuki-runner"
        if os.environ.get("TASUKI_LOCAL_REQUIRE_KMS_GRANT", "1") == "1":
            role = self.task_role_arn(task)
            # grants are eventually consistent: the boot retries AccessDenied for a bounded time
            deadline = time.monotonic() + grant_wait_seconds()
            while not self.live_grant(key_id, job_id, role):
                if time.monotonic() >= deadline or stopped.wait(0.25):
                    raise BootFailure(
                        EXIT_KMS_REFUSED,
                        f"KMS AccessDeniedException: no live grant lets "
                        f"{role or 'the task role'} Decrypt for tasuki:job-id={job_id}",
                    )
        try:
            data_key = self.kms.decrypt(
                CiphertextBlob=wrapped, KeyId=key_id, EncryptionContext={"tasuki:job-id": job_id}
            )["Plaintext"]
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
            if code == "InvalidCiphertextException":
                raise BootFailure(EXIT_WRONG_JOB, f"KMS {code}: the data key is not for job {job_id}") from exc
            if code in KMS_TRANSIENT:
                raise BootFailure(EXIT_KMS_UNAVAILABLE, f"KMS {code}") from exc
            raise BootFailure(EXIT_KMS_REFUSED, f"KMS {code}") from exc
        return open_sealed(job_id, data_key, nonce, ciphertext)

    # ---- one runner --------------------------------------------------------------------------------
    def _lifecycle(self, task: dict[str, Any], stopped: threading.Event) -> None:
        env = container_env(task)
        missing = [
            k
            for k in ("TASUKI_JOB_ID", "TASUKI_ATTEMPT", "TASUKI_RUNNER_NAME", "TASUKI_JIT_CONFIG_SEALED")
            if not env.get(k)
        ]
        if missing:
            self.boot_failure(task, f"missing container env {missing}", EXIT_MISSING_CREDENTIAL)
            return
        job_id, runner_name = env["TASUKI_JOB_ID"], env["TASUKI_RUNNER_NAME"]
        try:
            attempt = int(env["TASUKI_ATTEMPT"])
        except ValueError:
            self.boot_failure(
                task, f"TASUKI_ATTEMPT is not a number: {env['TASUKI_ATTEMPT']!r}", EXIT_MISSING_CREDENTIAL
            )
            return
        try:
            opened = self.open_credential(task, env, job_id, stopped)
        except BootFailure as exc:
            if stopped.is_set():
                return
            self.boot_failure(task, exc.reason, exc.code)
            return
        with self.world.lock:
            issued = self.world.jit_configs.get(runner_name)
        if issued is None or opened != issued:
            # GitHub does not know this registration: the listener's session is refused, it exits
            # 1 (terminated), run-helper.sh and run.sh exit 0, no job ran: tasuki-boot exits 80.
            self.boot_failure(
                task, f"the opened JIT config is not the one issued for runner {runner_name}", EXIT_NO_JOB
            )
            return
        runner = self.world.runner_by_name(runner_name)
        if runner is None:  # the mock records a runner with its JIT config (World.create_runner)
            raise RuntimeError(f"no runner {runner_name} although its JIT config was issued")
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
            self.phase(task, "exited")
            self.ledger.note_stop(task["taskArn"], "TaskFailedToStart", PULL_REASON)
            try:
                self.ecs.stop_task(cluster=CLUSTER_NAME, task=task["taskArn"], reason=PULL_REASON)
            except Exception as exc:
                log.warning("stop_task failed: %s", exc)
            return

        if stopped.wait(BOOT_SECONDS):
            return
        if attempt in (behaviour.get("version_deprecated") or []):
            # GitHub refuses the runner's version: Runner.Listener exits 7, run-helper.sh.template and
            # run.sh pass 7 on because the image sets ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1
            # (actions/runner src/Misc/layoutroot/run.sh, run-helper.sh.template); tasuki-boot exits 81.
            # The runner never comes online.
            self.note("version-deprecated", task, runner=runner_name, attempt=attempt)
            self.exit_task(task, "EssentialContainerExited", EXIT_REASON, EXIT_VERSION_DEPRECATED)
            return
        with self.world.lock:
            deleted = runner["deleted"]
            if not deleted:
                runner["status"] = "online"
        if deleted:
            # deleted before it could connect: the listener exits 1 (terminated), run-helper.sh maps
            # it to 0, run.sh exits 0, no job ran: tasuki-boot exits 80
            self.boot_failure(task, "runner was deleted before it registered", EXIT_NO_JOB)
            return
        self.phase(task, "idle")
        self.note("registered", task, runner=runner_name, runner_id=runner["id"])

        # Take the job it was launched for, if GitHub still has it queued -- or, with behaviour
        # `assign_to`, another job whose labels it matches while that one is still queued ("stolen" job).
        with self.world.lock:
            other = behaviour.get("assign_to")
            stolen = self.world.jobs.get(str(other)) if other is not None else None
            if stolen is not None and stolen["status"] == "queued":
                job_id = str(other)
                job = stolen
            take = False
            if job is not None and job["status"] == "queued":
                take = True
                job["status"] = "in_progress"
                job["runner_id"] = runner["id"]
                job["runner_name"] = runner_name
                runner["busy"] = True
                runner["job_id"] = job_id
        if job is None or not take:  # take implies a job
            self.note("idle", task, runner=runner_name, reason="no queued job for this runner")
            stopped.wait(MAX_HOLD_SECONDS)
            with self.world.lock:
                runner["status"] = "offline"
            return

        self.phase(task, "job")  # the job-started hook wrote its marker
        if behaviour.get("lose_in_progress"):
            # The in_progress delivery never reaches the webhook (GitHub's delivery log shows the failed
            # attempt) and GitHub does not retry it: only `completed` will tell.
            self.note("in_progress webhook lost", task, runner=runner_name)
        self.world.deliver(
            job_id,
            "in_progress",
            self.world.derived_payload(job, "in_progress"),
            lose=bool(behaviour.get("lose_in_progress")),
        )
        # Only Spot capacity is interrupted: a job re-run on on-demand runs to its end.
        on_spot = self.ledger.task_meta(task["taskArn"]).get("capacityProviderName") == "FARGATE_SPOT"
        if on_spot and attempt in (behaviour.get("spot_interruption") or []) and not stopped.wait(JOB_SECONDS / 2):
            # Fargate Spot: SIGTERM with a two-minute warning, the task stops with stopCode
            # SpotInterruption (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-capacity-providers.html).
            # From the warning on, DescribeTasks shows desiredStatus STOPPED and the stop code.
            # tasuki-boot gives the running job the stop grace, then stops the runner and exits 82.
            self.ledger.note_stop(task["taskArn"], "SpotInterruption", SPOT_REASON)
            grace = stop_grace_seconds(behaviour)
            self.note("spot-interrupted", task, attempt=attempt, grace_seconds=grace)
            if not stopped.wait(grace) and not job["complete_event"].is_set():
                self.note("grace-expired", task, attempt=attempt)
                self.exit_task(task, "SpotInterruption", SPOT_REASON, EXIT_JOB_INTERRUPTED)
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
        if send and behaviour.get("lose_completed"):
            # The completed delivery never reaches the webhook (a failed attempt in GitHub's delivery
            # log, never retried): the job is done on GitHub (GET .../jobs/{id} says so), but no
            # webhook will tell.
            self.note("completed webhook lost", task, runner=runner_name, conclusion=conclusion)
        if send:
            self.world.deliver(
                job_id,
                "completed",
                self.world.derived_payload(job, "completed", conclusion),
                lose=bool(behaviour.get("lose_completed")),
            )
        with self.world.lock:
            # a JIT runner is removed by GitHub once its job is done
            runner.update(status="offline", busy=False, deleted=True, deleted_by="github")
        self.note("exited", task, runner=runner_name, conclusion=job["conclusion"])
        self.exit_task(task, "EssentialContainerExited", EXIT_REASON, EXIT_JOB_FINISHED)

    # ---- ECS events ----------------------------------------------------------------------------------
    def send_stopped_event(self, task: dict[str, Any]) -> None:
        arn = task["taskArn"]
        meta = self.ledger.task_meta(arn)
        stop_code = meta.get("stopCode") or "UserInitiated"
        reason = task.get("stoppedReason") or meta.get("stoppedReason") or "Task stopped by user"
        stopped_at = meta.get("stoppedAt") or time.time()
        container: dict[str, Any] = {
            "containerArn": f"arn:aws:ecs:{REGION}:{ACCOUNT_ID}:container/{CLUSTER_NAME}/"
            f"{arn.rsplit('/', 1)[-1]}/{uuid.uuid4()}",
            "name": CONTAINER_NAME,
            "lastStatus": "STOPPED",
            "taskArn": arn,
        }
        if stop_code == "TaskFailedToStart":
            container["reason"] = reason
        elif meta.get("exitCode") is not None:
            container["exitCode"] = meta["exitCode"]
        else:
            # stopped by someone else (StopTask: SIGTERM): tasuki-boot exits 82 when a job was running
            # (its grace cannot outlast moto's immediate stop), 83 when none had started
            with self.lock:
                phase = (self.tasks.get(arn) or {}).get("phase", "booting")
            container["exitCode"] = EXIT_JOB_INTERRUPTED if phase == "job" else EXIT_STOPPED_BEFORE_JOB
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
        log.info(
            "ecs-events %s (%s, %s) -> %s%s",
            task.get("startedBy"),
            stop_code,
            arn.rsplit("/", 1)[-1],
            status,
            f" {function_error}" if function_error else "",
        )
