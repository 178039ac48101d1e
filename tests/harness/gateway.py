"""The gateway: one endpoint (AWS_ENDPOINT_URL) in front of moto and cargo lambda watch.

- `POST /2015-03-31/functions/<name-or-arn>/invocations` goes to cargo lambda watch (ARN stripped to
  the function name); a 5xx `{"errorType", "errorMessage"}` answer becomes 200 with
  `X-Amz-Function-Error: Unhandled`, as the real Lambda Invoke API does (Step Functions then sees
  `errorType` as the error name).
- Secrets Manager GetSecretValue: an ARN whose name ends in a hyphen and six characters is read as a
  complete ARN, as the real service does (moto resolves it as a partial one).
- Step Functions StartExecution: fault injection (kind `start_execution_throttle`: 400
  ThrottlingException, as the service throttles) by the same rules; every request is recorded.
- Everything else goes to moto unchanged, except ECS:
  * RunTask: fault injection (capacity `failures[]` or ThrottlingException) decided per request by
    rules set through the control API; every request is recorded. moto ignores
    `capacityProviderStrategy` (and fails without EC2 container instances), so the request is sent
    to moto as `launchType: FARGATE` and the answer gets the `capacityProviderName` / `launchType`
    the real service would report.
  * RunTask is first checked as ECS checks it and moto does not: tag characters and lengths, the
    8 192-character `overrides` limit, Fargate cpu/memory combinations; quota failures can be injected.
  * DescribeTasks / StopTask: the answer is completed with what moto does not model
    (`capacityProviderName`, `availabilityZone`, `stopCode`, timestamps).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import urllib.parse
import uuid
from typing import Any

from harness.common import ACCOUNT_ID, CLUSTER_NAME, REGION
from harness.httputil import BaseHandler, forward, json_or_none

log = logging.getLogger("gateway")

ECS_PREFIX = "AmazonEC2ContainerServiceV20141113."
CAPACITY_REASON = "Capacity is unavailable at this time. Please try again later or in a different availability zone"
# Account quota answers (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/service-quotas.html;
# the wording as ECS reports it, e.g. in service events and RunTask failures): "quota" comes back as a
# RunTask failure, "cpu_limit" as the exception a new account's Fargate task size limit raises
# (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-cpu-memory-error.html).
QUOTA_REASON = "You've reached the limit on the number of vCPUs you can run concurrently"
CPU_LIMIT_REASON = "The requested CPU configuration is above your limit"
# Which call each fault kind fails: ECS RunTask, or Step Functions StartExecution (the webhook's, and
# the rescue sweep's for a job recorded but never started).
FAULT_OPERATIONS = {
    "capacity": "RunTask",
    "throttle": "RunTask",
    "quota": "RunTask",
    "cpu_limit": "RunTask",
    "start_execution_throttle": "StartExecution",
}
FAULT_KINDS = tuple(FAULT_OPERATIONS)
DEFAULT_REASONS = {
    "capacity": CAPACITY_REASON,
    "throttle": "Rate exceeded",
    "quota": QUOTA_REASON,
    "cpu_limit": CPU_LIMIT_REASON,
    "start_execution_throttle": "Rate exceeded",
}
SFN_PREFIX = "AWSStepFunctions."

# ---- what the real RunTask refuses and moto accepts ----------------------------------------------
# Tags: https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Tag.html — at most 50 per
# resource, keys 1-128 and values 0-256 characters, "letters, numbers, and spaces representable in
# UTF-8, and the following characters: + - = . _ : / @", and no `aws:` prefix. The limits are the
# documented ones; the wording of the refusals is ours (the API reference does not quote it).
MAX_TAGS = 50
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256
TAG_SYMBOLS = set("+-=._:/@ ")
# overrides: "A total of 8192 characters are allowed for overrides. This limit includes the JSON
# formatting characters of the override structure."
# (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html); ECS answers
# "InvalidParameterException: Container Overrides length must be at most 8192".
MAX_OVERRIDES_CHARS = 8192
# Fargate task sizes, CPU units -> allowed memory MiB
# (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html#fargate-tasks-size).
FARGATE_SIZES: dict[int, set[int]] = {
    256: {512, 1024, 2048},
    512: set(range(1024, 4096 + 1, 1024)),
    1024: set(range(2048, 8192 + 1, 1024)),
    2048: set(range(4096, 16384 + 1, 1024)),
    4096: set(range(8192, 30720 + 1, 1024)),
    8192: set(range(16384, 61440 + 1, 4096)),
    16384: set(range(32768, 122880 + 1, 8192)),
}


def tag_char_ok(c: str) -> bool:
    return c.isalnum() or c in TAG_SYMBOLS


def tag_problem(tags: list[dict[str, Any]]) -> str | None:
    """Why ECS would refuse these RunTask tags, or None."""
    if len(tags) > MAX_TAGS:
        return f"Too many tags: {len(tags)} (at most {MAX_TAGS})"
    for tag in tags:
        key, value = str(tag.get("key") or ""), str(tag.get("value") or "")
        if not 1 <= len(key) <= MAX_TAG_KEY:
            return f"Tag key '{key[:40]}' must be 1 to {MAX_TAG_KEY} characters"
        if len(value) > MAX_TAG_VALUE:
            return f"Tag value of key '{key}' must be at most {MAX_TAG_VALUE} characters"
        if key.lower().startswith("aws:"):
            return f"Tag key '{key}' uses the reserved prefix aws:"
        bad = next((c for c in key + value if not tag_char_ok(c)), None)
        if bad is not None:
            return (
                f"The tag '{key}' has a character ECS does not allow ({bad!r}): tags may contain letters, "
                "numbers, spaces and + - = . _ : / @"
            )
    return None


def fargate_size_problem(cpu: Any, memory: Any) -> str | None:
    """Why Fargate would refuse this task-level cpu/memory override, or None."""
    if cpu is None and memory is None:
        return None
    try:
        cpu_units, memory_mib = int(str(cpu)), int(str(memory))
    except ValueError:
        return f"No Fargate configuration exists for given values: {cpu} CPU, {memory} memory."
    if memory_mib not in FARGATE_SIZES.get(cpu_units, set()):
        return (
            f"No Fargate configuration exists for given values: {cpu_units} CPU, {memory_mib} memory. "
            "See the Amazon ECS documentation for the valid values."
        )
    return None


FAULT_MATCH_KEYS = ("job_id", "attempt", "capacity_provider", "subnet")
# A StartExecution names no attempt, capacity or subnet: its rules match on the job only.
MATCH_KEYS_OF = {"RunTask": FAULT_MATCH_KEYS, "StartExecution": ("job_id",)}


def parse_started_by(started_by: str | None) -> tuple[str | None, int | None]:
    """`tasuki/<job_id>/<attempt>` -> (job_id, attempt)."""
    if not started_by or not started_by.startswith("tasuki/"):
        return None, None
    parts = started_by.split("/")
    job_id = parts[1] if len(parts) > 1 and parts[1] else None
    attempt = None
    if len(parts) > 2:
        try:
            attempt = int(parts[2])
        except ValueError:
            attempt = None
    return job_id, attempt


def job_of_execution_name(name: str | None) -> str | None:
    """`<job_id>-<run_attempt>` (the execution name the webhook and the rescue sweep use) -> job_id."""
    job, sep, attempt = (name or "").rpartition("-")
    return job if sep and job.isdigit() and attempt.isdigit() else None


def function_name_from_path_segment(segment: str) -> str:
    """`arn:aws:lambda:us-east-1:123:function:run-task[:qualifier]`, `123:function:x`, `x:alias` -> name."""
    name = urllib.parse.unquote(segment)
    if name.startswith("arn:"):
        parts = name.split(":")
        return parts[6] if len(parts) > 6 else name
    parts = name.split(":")
    if len(parts) >= 3 and parts[1] == "function":
        return parts[2]
    return parts[0]


class EcsLedger:
    """Fault rules (RunTask and StartExecution), the requests they saw, and what moto does not keep
    about tasks. Thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rules: list[dict[str, Any]] = []
        self.run_task_requests: list[dict[str, Any]] = []
        self.start_execution_requests: list[dict[str, Any]] = []
        self.tasks: dict[str, dict[str, Any]] = {}  # taskArn -> overlay
        self.subnet_azs: dict[str, str] = {}
        self.cluster_capacity_providers: set[str] = set()
        self._rule_seq = 0

    # ---- fault rules ---------------------------------------------------------------------------
    def add_rule(self, spec: dict[str, Any]) -> dict[str, Any]:
        kind = spec.get("kind", "capacity")
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}, got {kind!r}")
        operation = FAULT_OPERATIONS[kind]
        unknown = set(spec) - set(FAULT_MATCH_KEYS) - {"kind", "times", "reason"}
        if unknown:
            raise ValueError(f"unknown fault rule field(s): {sorted(unknown)}")
        unmatchable = sorted(
            k for k in FAULT_MATCH_KEYS if spec.get(k) is not None and k not in MATCH_KEYS_OF[operation]
        )
        if unmatchable:
            raise ValueError(f"a {kind} rule (on {operation}) cannot match on {unmatchable}")
        times = spec.get("times")
        if times is not None and (not isinstance(times, int) or times < 1):
            raise ValueError("times must be a positive integer (or absent: never expires)")
        with self.lock:
            self._rule_seq += 1
            rule = {
                "id": self._rule_seq,
                "kind": kind,
                "operation": operation,
                "times": times,
                "reason": spec.get("reason") or DEFAULT_REASONS[kind],
                "matched": 0,
            }
            for key in FAULT_MATCH_KEYS:
                if spec.get(key) is not None:
                    rule[key] = str(spec[key])
            self.rules.append(rule)
            return dict(rule)

    def clear_rules(self) -> int:
        with self.lock:
            n = len(self.rules)
            self.rules.clear()
            return n

    def match_rule(self, facts: dict[str, Any], operation: str = "RunTask") -> dict[str, Any] | None:
        """The first rule for `operation` whose fields all equal the request's `facts` (counted)."""
        with self.lock:
            for rule in self.rules:
                if rule["operation"] == operation and all(
                    key not in rule or (facts.get(key) is not None and str(facts[key]) == rule[key])
                    for key in FAULT_MATCH_KEYS
                ):
                    rule["matched"] += 1
                    hit = dict(rule)
                    if rule["times"] is not None and rule["matched"] >= rule["times"]:
                        self.rules.remove(rule)
                    return hit
        return None

    # ---- records -------------------------------------------------------------------------------
    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.run_task_requests.append(entry)

    def record_start_execution(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.start_execution_requests.append(entry)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "fault_rules": [dict(r) for r in self.rules],
                "run_task_requests": [dict(r) for r in self.run_task_requests],
                "start_execution_requests": [dict(r) for r in self.start_execution_requests],
            }

    # ---- task overlay --------------------------------------------------------------------------
    def note_task(self, task_arn: str, **fields: Any) -> None:
        with self.lock:
            self.tasks.setdefault(task_arn, {}).update(fields)

    def note_stop(self, task_arn: str, stop_code: str, reason: str | None = None) -> None:
        """Remember why a task stopped (first writer wins: the real cause happens first)."""
        with self.lock:
            meta = self.tasks.setdefault(task_arn, {})
            if "stopCode" not in meta:
                meta["stopCode"] = stop_code
                meta["stoppedAt"] = time.time()
                if reason is not None:
                    meta["stoppedReason"] = reason

    def task_meta(self, task_arn: str) -> dict[str, Any]:
        with self.lock:
            return dict(self.tasks.get(task_arn, {}))

    def patch_task(self, task: dict[str, Any]) -> None:
        meta = self.task_meta(task.get("taskArn", ""))
        for key in ("capacityProviderName", "launchType", "availabilityZone", "createdAt", "startedAt"):
            if key in meta:
                task[key] = meta[key]
        if task.get("lastStatus") != "STOPPED" and "stopCode" in meta:
            # ECS decided to stop it (a Spot interruption's two-minute warning): it still runs, but
            # DescribeTasks shows why it will stop (stopCode is set once desiredStatus is STOPPED,
            # https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Task.html).
            task["desiredStatus"] = "STOPPED"
            task["stopCode"] = meta["stopCode"]
            if "stoppedReason" in meta:
                task["stoppedReason"] = meta["stoppedReason"]
        if task.get("lastStatus") == "STOPPED":
            task.setdefault("stopCode", meta.get("stopCode", "UserInitiated"))
            if not task.get("stopCode"):
                task["stopCode"] = meta.get("stopCode", "UserInitiated")
            if "stoppedAt" in meta:
                task["stoppedAt"] = meta["stoppedAt"]
                task["stoppingAt"] = meta["stoppedAt"]
                task["executionStoppedAt"] = meta["stoppedAt"]


class GatewayHandler(BaseHandler):
    # set on the server object
    @property
    def ctx(self) -> Gateway:
        return self.server.ctx  # type: ignore[attr-defined]

    def do_HEAD(self) -> None:
        self.handle_request()

    def handle_request(self) -> None:
        try:
            body = self.read_body()
            path = urllib.parse.urlsplit(self.path).path
            parts = path.split("/")
            if (
                self.command == "POST"
                and len(parts) >= 5
                and parts[1] == "2015-03-31"
                and parts[2] == "functions"
                and parts[-1] == "invocations"
            ):
                self.invoke_lambda("/".join(parts[3:-1]), body)
                return
            target = self.headers.get("X-Amz-Target") or ""
            if target == "secretsmanager.GetSecretValue":
                self.get_secret_value(body)
                return
            if target == SFN_PREFIX + "StartExecution":
                self.start_execution(body)
                return
            if target.startswith(ECS_PREFIX):
                op = target[len(ECS_PREFIX) :]
                if op == "RunTask":
                    self.run_task(body)
                    return
                if op in ("DescribeTasks", "StopTask"):
                    self.ecs_patched(op, body)
                    return
            self.to_moto(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # keep the gateway alive; answer like a broken service would
            log.exception("gateway error on %s %s", self.command, self.path)
            with contextlib.suppress(OSError):
                self.send_json(
                    500,
                    {"__type": "InternalFailure", "message": f"local gateway error: {exc}"},
                    [("x-amzn-ErrorType", "InternalFailure")],
                )

    # ---- moto passthrough ------------------------------------------------------------------------
    def moto(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        return forward(self.ctx.moto_port, self.command, self.path, body, self.headers.items(), timeout=120)

    def to_moto(self, body: bytes) -> None:
        status, headers, data = self.moto(body)
        self.send_bytes(status, data, headers)

    # ---- Lambda ------------------------------------------------------------------------------------
    def invoke_lambda(self, segment: str, body: bytes) -> None:
        name = function_name_from_path_segment(segment)
        invocation_type = (self.headers.get("X-Amz-Invocation-Type") or "RequestResponse").strip()
        req_id = str(uuid.uuid4())
        if invocation_type == "DryRun":
            self.send_bytes(204, b"", [("x-amzn-RequestId", req_id)])
            return
        if invocation_type == "Event":
            threading.Thread(
                target=self.ctx.invoke_sync, args=(name, body), name=f"invoke-async-{name}", daemon=True
            ).start()
            self.send_bytes(202, b"", [("x-amzn-RequestId", req_id)])
            return
        status, headers, data = self.ctx.invoke_sync(name, body)
        self.send_bytes(status, data, headers + [("x-amzn-RequestId", req_id)])

    # ---- Secrets Manager ---------------------------------------------------------------------------
    def get_secret_value(self, body: bytes) -> None:
        """GetSecretValue, with the real service's reading of ARNs. "If you specify an incomplete ARN
        without the random suffix, and instead provide the 'friendly name', you *must not* include
        a hyphen followed by six characters": such an ARN is read as a complete ARN and must match
        one exactly (https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_GetSecretValue.html,
        `SecretId`). moto resolves it as a partial ARN instead."""
        req = json_or_none(body) or {}
        secret_id = str(req.get("SecretId") or "")
        status, headers, data = self.moto(body)
        resp = json_or_none(data)
        name = secret_id.split(":secret:", 1)[1] if secret_id.startswith("arn:") and ":secret:" in secret_id else ""
        suffix = name.rsplit("-", 1)[1] if "-" in name else ""
        reads_as_complete = len(suffix) == 6 and suffix.isalnum()
        if status == 200 and isinstance(resp, dict) and reads_as_complete and resp.get("ARN") != secret_id:
            log.info("GetSecretValue %s: read as a complete ARN, no such secret", secret_id)
            self.send_json(
                400,
                {"__type": "ResourceNotFoundException", "Message": "Secrets Manager can't find the specified secret."},
                [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", "ResourceNotFoundException")],
            )
            return
        self.send_bytes(status, data, headers)

    # ---- Step Functions --------------------------------------------------------------------------------
    def start_execution(self, body: bytes) -> None:
        """StartExecution, failed by a `start_execution_throttle` rule the way the service throttles:
        HTTP 400 with the AWS JSON 1.0 protocol's error body and `x-amzn-ErrorType` header
        (ThrottlingException, "The request was denied due to request throttling", HTTP 400:
        https://docs.aws.amazon.com/step-functions/latest/apireference/CommonErrors.html).
        Otherwise moto starts it; either way the request is recorded."""
        req = json_or_none(body) or {}
        name = req.get("name")
        job_id = job_of_execution_name(name)
        entry: dict[str, Any] = {"at": time.time(), "name": name, "job_id": job_id}
        ledger = self.ctx.ledger
        rule = ledger.match_rule({"job_id": job_id}, operation="StartExecution")
        if rule is not None:
            entry.update(outcome="throttle", rule_id=rule["id"])
            ledger.record_start_execution(entry)
            log.info("StartExecution %s -> injected ThrottlingException", name)
            self.send_json(
                400,
                {"__type": "ThrottlingException", "message": rule["reason"]},
                [
                    ("Content-Type", "application/x-amz-json-1.0"),
                    ("x-amzn-ErrorType", "ThrottlingException"),
                    ("x-amzn-RequestId", str(uuid.uuid4())),
                ],
            )
            return
        status, headers, data = self.moto(body)
        resp = json_or_none(data)
        answer = resp if isinstance(resp, dict) else {}
        if status == 200:
            entry.update(outcome="started", execution_arn=answer.get("executionArn"))
        else:
            entry.update(outcome="error", status=status, error=answer.get("__type"))
        ledger.record_start_execution(entry)
        log.info("StartExecution %s -> %s", name, entry["outcome"])
        self.send_bytes(status, data, headers)

    # ---- ECS -----------------------------------------------------------------------------------------
    def run_task(self, body: bytes) -> None:
        req = json.loads(body or b"{}")
        job_id, attempt = parse_started_by(req.get("startedBy"))
        strategy = req.get("capacityProviderStrategy") or []
        # The capacity the task asks for: a strategy's provider, else the launch type (on-demand
        # Fargate is `launchType: FARGATE`, reported and matched as capacity provider "FARGATE").
        provider = strategy[0].get("capacityProvider") if strategy else req.get("launchType")
        awsvpc = (req.get("networkConfiguration") or {}).get("awsvpcConfiguration") or {}
        subnets = awsvpc.get("subnets") or []
        subnet = subnets[0] if subnets else None
        env_names: list[str] = []
        for co in (req.get("overrides") or {}).get("containerOverrides") or []:
            env_names += [e.get("name") for e in co.get("environment") or []]
        entry: dict[str, Any] = {
            "at": time.time(),
            "job_id": job_id,
            "attempt": attempt,
            "started_by": req.get("startedBy"),
            "capacity_provider": provider,
            "launch_type": req.get("launchType"),
            "subnet": subnet,
            "subnets": subnets,
            "security_groups": awsvpc.get("securityGroups"),
            "assign_public_ip": awsvpc.get("assignPublicIp"),
            "task_definition": req.get("taskDefinition"),
            "cpu": (req.get("overrides") or {}).get("cpu"),
            "memory": (req.get("overrides") or {}).get("memory"),
            "tags": {t.get("key"): t.get("value") for t in req.get("tags") or []},
            "env_names": env_names,
        }
        ledger = self.ctx.ledger
        # What the real service checks and moto does not, before placing anything.
        problem = None
        error_type = "InvalidParameterException"
        overrides = req.get("overrides") or {}
        overrides_chars = len(json.dumps(overrides, separators=(",", ":"), ensure_ascii=False))
        entry["overrides_chars"] = overrides_chars
        fargate = provider in (None, "FARGATE", "FARGATE_SPOT")
        size_problem = fargate_size_problem(overrides.get("cpu"), overrides.get("memory")) if fargate else None
        if overrides_chars > MAX_OVERRIDES_CHARS:
            problem = f"Container Overrides length must be at most {MAX_OVERRIDES_CHARS}"
        elif (bad_tags := tag_problem(req.get("tags") or [])) is not None:
            problem = bad_tags
        elif size_problem is not None:
            problem, error_type = size_problem, "ClientException"
        elif strategy and req.get("launchType"):
            problem = "Specifying both a launch type and capacity provider strategy is not supported."
        elif len(strategy) > 1 and len({s.get("capacityProvider") for s in strategy}) != len(strategy):
            problem = "The capacity provider strategy contains duplicate capacity providers."
        elif provider and ledger.cluster_capacity_providers and provider not in ledger.cluster_capacity_providers:
            problem = (
                f"The specified capacity provider strategy cannot contain a capacity provider that is not "
                f"associated with the cluster. Associate the capacity provider with the cluster or specify a "
                f"valid capacity provider and try again. ({provider})"
            )
        if problem:
            entry.update(outcome="error", error=error_type, message=problem)
            ledger.record(entry)
            log.info("RunTask %s attempt %s refused like ECS would: %s", job_id, attempt, problem)
            self.send_json(
                400,
                {"__type": error_type, "message": problem},
                [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", error_type)],
            )
            return

        rule = ledger.match_rule(
            {"job_id": job_id, "attempt": attempt, "capacity_provider": provider, "subnet": subnet}
        )
        if rule is not None:
            entry.update(outcome=rule["kind"], rule_id=rule["id"])
            ledger.record(entry)
            log.info("RunTask %s attempt %s %s/%s -> injected %s", job_id, attempt, provider, subnet, rule["kind"])
            if rule["kind"] in ("capacity", "quota"):
                self.send_json(
                    200,
                    {
                        "tasks": [],
                        "failures": [
                            {
                                "arn": f"arn:aws:ecs:{REGION}:{ACCOUNT_ID}:cluster/"
                                f"{req.get('cluster') or CLUSTER_NAME}",
                                "reason": rule["reason"],
                            }
                        ],
                    },
                    [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", str(uuid.uuid4()))],
                )
            else:
                error = "ThrottlingException" if rule["kind"] == "throttle" else "ClientException"
                self.send_json(
                    400,
                    {"__type": error, "message": rule["reason"]},
                    [
                        ("Content-Type", "application/x-amz-json-1.1"),
                        ("x-amzn-ErrorType", error),
                        ("x-amzn-RequestId", str(uuid.uuid4())),
                    ],
                )
            return

        # moto ignores capacityProviderStrategy and places anything but FARGATE on EC2 container
        # instances (there are none): it always gets `launchType: FARGATE`; the answer is patched.
        fwd = dict(req)
        fwd.pop("capacityProviderStrategy", None)
        fwd["launchType"] = "FARGATE"
        launch_type = req.get("launchType") or ("FARGATE" if fargate else "EC2")
        status, headers, data = self.moto(json.dumps(fwd).encode())
        resp = json_or_none(data)
        if status != 200 or not isinstance(resp, dict):
            entry.update(
                outcome="error", status=status, error=(resp or {}).get("__type") if isinstance(resp, dict) else None
            )
            ledger.record(entry)
            log.info("RunTask %s attempt %s -> moto error %s", job_id, attempt, status)
            self.send_bytes(status, data, headers)
            return
        now = time.time()
        arns = []
        for task in resp.get("tasks") or []:
            arn = task.get("taskArn")
            arns.append(arn)
            fields: dict[str, Any] = {"launchType": launch_type, "createdAt": now, "startedAt": now}
            if strategy and provider:
                fields["capacityProviderName"] = provider
            if subnet and subnet in ledger.subnet_azs:
                fields["availabilityZone"] = ledger.subnet_azs[subnet]
            ledger.note_task(arn, **fields)
            ledger.patch_task(task)
        entry.update(outcome="started", task_arns=arns, task_arn=arns[0] if arns else None)
        ledger.record(entry)
        log.info("RunTask %s attempt %s %s/%s -> started %s", job_id, attempt, provider, subnet, arns)
        self.send_json(200, resp, [("Content-Type", "application/x-amz-json-1.1")] + _request_id(headers))

    def ecs_patched(self, op: str, body: bytes) -> None:
        status, headers, data = self.moto(body)
        resp = json_or_none(data)
        if status == 200 and isinstance(resp, dict):
            ledger = self.ctx.ledger
            if op == "StopTask" and isinstance(resp.get("task"), dict):
                req = json_or_none(body) or {}
                ledger.note_stop(resp["task"].get("taskArn", ""), "UserInitiated", req.get("reason"))
                ledger.patch_task(resp["task"])
                log.info("StopTask %s (UserInitiated)", resp["task"].get("taskArn"))
            for task in resp.get("tasks") or []:
                ledger.patch_task(task)
            self.send_json(200, resp, [("Content-Type", "application/x-amz-json-1.1")] + _request_id(headers))
            return
        self.send_bytes(status, data, headers)


def _request_id(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() == "x-amzn-requestid"]


class Gateway:
    def __init__(self, moto_port: int, lambda_port: int, ledger: EcsLedger):
        self.moto_port = moto_port
        self.lambda_port = lambda_port
        self.ledger = ledger
        self.invocations: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def invoke_sync(self, name: str, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """Invoke `name` on cargo lambda watch; answer like the Lambda Invoke API."""
        started = time.time()
        try:
            status, _headers, data = forward(
                self.lambda_port,
                "POST",
                f"/2015-03-31/functions/{urllib.parse.quote(name, safe='')}/invocations",
                body,
                [("Content-Type", "application/json")],
                timeout=900,
            )
        except OSError as exc:
            self._note(name, started, 500, "ServiceException")
            log.error("invoke %s: cargo lambda watch unreachable: %s", name, exc)
            return (
                500,
                [("Content-Type", "application/json"), ("x-amzn-ErrorType", "ServiceException")],
                json.dumps({"Type": "Service", "Message": f"local Lambda emulator unreachable: {exc}"}).encode(),
            )
        base = [("Content-Type", "application/json"), ("X-Amz-Executed-Version", "$LATEST")]
        if 200 <= status < 300:
            self._note(name, started, 200, None)
            return 200, base, data
        if status == 404:
            self._note(name, started, 404, "ResourceNotFoundException")
            return (
                404,
                [("Content-Type", "application/json"), ("x-amzn-ErrorType", "ResourceNotFoundException")],
                json.dumps(
                    {
                        "Type": "User",
                        "Message": f"Function not found: arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}",
                    }
                ).encode(),
            )
        payload = json_or_none(data)
        if not (isinstance(payload, dict) and "errorType" in payload):
            payload = {
                "errorType": "Runtime.ExitError",
                "errorMessage": f"local Lambda emulator answered HTTP {status}: {data[:500].decode(errors='replace')}",
            }
            data = json.dumps(payload).encode()
        self._note(name, started, 200, str(payload.get("errorType")))
        return 200, base + [("X-Amz-Function-Error", "Unhandled")], data

    def _note(self, name: str, started: float, status: int, error: str | None) -> None:
        took = time.time() - started
        log.info("invoke %s -> %s%s in %.2fs", name, status, f" ({error})" if error else "", took)
        with self.lock:
            self.invocations.append({"function": name, "status": status, "error": error, "seconds": round(took, 3)})
