"""Helpers for tests and demos that talk to a running local stack (`local_stack.py up`).

    from harness import client
    job_id = client.queue_job(["self-hosted", "tasuki"])
    item = client.wait_for_state(job_id, {"completed"}, timeout=90)

Everything reads `.tasuki/local.env` (or the file named by TASUKI_LOCAL_ENV_FILE).
"""

from __future__ import annotations

import base64
import decimal
import hashlib
import hmac
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from harness.common import ACCOUNT_ID, APP_ID, LOCAL_ENV_FILE, PRIVATE_KEY_SECRET_NAME, read_env_file

TERMINAL_STATES = {"refused", "completed", "failed", "cancelled", "timed-out"}


class StackNotUp(RuntimeError):
    pass


@lru_cache(maxsize=1)
def env() -> dict[str, str]:
    path = Path(os.environ.get("TASUKI_LOCAL_ENV_FILE") or LOCAL_ENV_FILE)
    if not path.exists():
        raise StackNotUp(f"{path} not found: start the local stack first (make local-up)")
    return read_env_file(path)


def _boto(service: str) -> Any:
    return _boto_with(service, None)


def _boto_with(service: str, config: Any) -> Any:
    import boto3

    e = env()
    return boto3.client(
        service,
        region_name=e["AWS_REGION"],
        endpoint_url=e["AWS_ENDPOINT_URL"],
        aws_access_key_id=e["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=e["AWS_SECRET_ACCESS_KEY"],
        config=config,
    )


@cache
def boto(service: str) -> Any:
    """A boto3 client for `service` on the gateway (what the Lambdas see)."""
    return _boto(service)


# ---- HTTP ---------------------------------------------------------------------------------------------
def http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 120
) -> tuple[int, Any, dict[str, str]]:
    """(status, parsed JSON body or None, headers). `body` may be bytes or a JSON-able value."""
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw, rh = resp.status, resp.read(), dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        status, raw, rh = exc.code, exc.read(), dict(exc.headers.items())
    try:
        parsed = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        parsed = raw.decode(errors="replace")
    return status, parsed, rh


def mock(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, parsed, _ = http(method, env()["TASUKI_GITHUB_URL"] + path, body, headers)
    return status, parsed


def _ok(status: int, parsed: Any, what: str) -> Any:
    if not 200 <= status < 300:
        raise AssertionError(f"{what}: HTTP {status}: {parsed}")
    return parsed


# ---- the GitHub mock --------------------------------------------------------------------------------------
def queue_job_full(
    labels: list[str], behaviour: dict[str, Any] | None = None, private: bool = True, repository: str | None = None
) -> dict[str, Any]:
    """Queue a simulated GitHub job; returns {job_id, delivery_id, status, body} (status/body: the webhook's answer)."""
    body: dict[str, Any] = {"labels": labels, "private": private, "behaviour": behaviour or {}}
    if repository:
        body["repository"] = repository
    return _ok(*mock("POST", "/_mock/jobs", body), "queue job")


def queue_job(
    labels: list[str], behaviour: dict[str, Any] | None = None, private: bool = True, repository: str | None = None
) -> str:
    return str(queue_job_full(labels, behaviour, private, repository)["job_id"])


def redeliver(delivery_id: str) -> dict[str, Any]:
    return _ok(*mock("POST", "/_mock/redeliver", {"delivery_id": delivery_id}), "redeliver")


def queue_again(job_id: str) -> dict[str, Any]:
    return _ok(*mock("POST", f"/_mock/jobs/{job_id}/queue-again", {}), "queue again")


def cancel_job(job_id: str) -> dict[str, Any]:
    return _ok(*mock("POST", f"/_mock/jobs/{job_id}/cancel", {}), "cancel")


def complete_job(job_id: str, conclusion: str = "success") -> dict[str, Any]:
    return _ok(*mock("POST", f"/_mock/jobs/{job_id}/complete", {"conclusion": conclusion}), "complete")


def add_fault(
    kind: str = "capacity",
    *,
    job_id: str | None = None,
    attempt: int | None = None,
    capacity_provider: str | None = None,
    subnet: str | None = None,
    times: int | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Make matching calls fail. ECS RunTask: kind `capacity` (failures[]), `throttle` (ThrottlingException),
    `quota` (failures[]) or `cpu_limit` (ClientException). Step Functions StartExecution: kind
    `start_execution_throttle` (400 ThrottlingException; matches on `job_id` only). `times`: matches
    before the rule expires (absent: never)."""
    rule: dict[str, Any] = {"kind": kind}
    for key, value in (
        ("job_id", job_id),
        ("attempt", attempt),
        ("capacity_provider", capacity_provider),
        ("subnet", subnet),
        ("times", times),
        ("reason", reason),
    ):
        if value is not None:
            rule[key] = value
    return _ok(*mock("POST", "/_mock/faults", rule), "add fault")


def clear_faults() -> int:
    return _ok(*mock("DELETE", "/_mock/faults"), "clear faults")["cleared"]


def add_github_fault(
    kind: str,
    *,
    route: str | None = None,
    times: int = 1,
    retry_after: int | None = None,
    status: int | None = None,
) -> dict[str, Any]:
    """Make the GitHub mock answer its next `times` REST calls (of the ROUTES handler `route`, or any)
    with a fault: `server_error` (502, or `status` 500/502/503/504), `secondary_rate_limit` (403 or
    429, `retry-after: retry_after or 60`), `primary_rate_limit` (403 or 429, `x-ratelimit-remaining: 0`,
    reset in `retry_after or 60` s). Returns the rule (`id`, `matched`, …)."""
    rule: dict[str, Any] = {"kind": kind, "times": times}
    for key, value in (("route", route), ("retry_after", retry_after), ("status", status)):
        if value is not None:
            rule[key] = value
    return _ok(*mock("POST", "/_mock/github-faults", rule), "add github fault")


def clear_github_faults() -> int:
    return _ok(*mock("DELETE", "/_mock/github-faults"), "clear github faults")["cleared"]


def github_faults() -> list[dict[str, Any]]:
    """Every GitHub fault rule, with how many times each `matched` (spent rules stay listed)."""
    return _ok(*mock("GET", "/_mock/github-faults"), "github faults")["rules"]


def hook_deliveries() -> list[dict[str, Any]]:
    """The App's webhook delivery log, newest first: every attempt (first deliveries and
    redeliveries) as `hook-delivery-item`s, plus the `job_id` it was about."""
    return mock_state()["hook_deliveries"]


def age_hook_delivery(attempt_id: int, seconds: float) -> dict[str, Any]:
    """Move one delivery attempt `seconds` into the past (GitHub redelivers only the past 3 days)."""
    return _ok(*mock("POST", f"/_mock/hook-deliveries/{attempt_id}/age", {"seconds": seconds}), "age delivery")


def mock_state() -> dict[str, Any]:
    return _ok(*mock("GET", "/_mock/state"), "mock state")


def scheduled_event() -> dict[str, Any]:
    """An EventBridge "Scheduled Event", as the rescue schedule sends it (the sweep ignores it)."""
    e = env()
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": e["AWS_REGION"],
        "resources": [f"arn:aws:events:{e['AWS_REGION']}:{ACCOUNT_ID}:rule/Tasuki-RescueSweep"],
        "detail": {},
    }


def invoke(function: str, payload: Any) -> tuple[Any, str | None]:
    """Lambda Invoke of a local function through the gateway, as AWS services invoke them:
    (the parsed answer, the `FunctionError` if it failed)."""
    from botocore.config import Config

    lam = _boto_with("lambda", Config(read_timeout=300, retries={"total_max_attempts": 1}))
    answer = lam.invoke(FunctionName=function, Payload=json.dumps(payload).encode())
    raw = answer["Payload"].read()
    return (json.loads(raw) if raw else None), answer.get("FunctionError")


def secrets_for_leak_check() -> list[str]:
    return _ok(*mock("GET", "/_mock/secrets-for-leak-check"), "leak-check values")["values"]


def sign(body: bytes) -> str:
    """`X-Hub-Signature-256` value of `body` with the local webhook secret."""
    secret = env()["TASUKI_WEBHOOK_SECRET"].encode()
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def send_raw_webhook(body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """POST exactly `body` with `headers` to the webhook Function URL."""
    status, parsed, _ = http("POST", env()["TASUKI_WEBHOOK_URL"], body, headers)
    return status, parsed


def app_jwt(private_key_pem: str | None = None, iss: Any = APP_ID, lifetime: int = 540, iat_offset: int = -60) -> str:
    """A GitHub App JWT (RS256) like octocrab makes; by default with the local App key."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    if private_key_pem is None:
        private_key_pem = boto("secretsmanager").get_secret_value(SecretId=PRIVATE_KEY_SECRET_NAME)["SecretString"]
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    now = int(time.time())

    def enc(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()

    signing_input = (
        f"{enc({'alg': 'RS256', 'typ': 'JWT'})}.{enc({'iat': now + iat_offset, 'exp': now + lifetime, 'iss': iss})}"
    )
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError(f"the App's private key is not an RSA key: {type(key).__name__}")
    sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


def installation_token(installation_id: int = 23154469) -> str:
    status, body = mock(
        "POST", f"/app/installations/{installation_id}/access_tokens", {}, {"Authorization": f"Bearer {app_jwt()}"}
    )
    return _ok(status, body, "installation token")["token"]


# ---- DynamoDB ------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, set):
        return {_plain(v) for v in value}
    return value


def _deserialize(item: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeDeserializer

    d = TypeDeserializer()
    return {k: _plain(d.deserialize(v)) for k, v in item.items()}


def job_item(job_id: str) -> dict[str, Any] | None:
    """The job item (`pk = JOB#<id>`, `sk = JOB`) as plain Python values, or None."""
    resp = boto("dynamodb").get_item(
        TableName=env()["TASUKI_TABLE"], Key={"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": "JOB"}}, ConsistentRead=True
    )
    return _deserialize(resp["Item"]) if "Item" in resp else None


def timeline(job_id: str) -> list[dict[str, Any]]:
    """The job's event items (`sk = EVENT#...`) in order."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": env()["TASUKI_TABLE"],
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :ev)",
        "ExpressionAttributeValues": {":pk": {"S": f"JOB#{job_id}"}, ":ev": {"S": "EVENT#"}},
        "ConsistentRead": True,
    }
    for _ in range(1000):
        resp = boto("dynamodb").query(**kwargs)
        items += [_deserialize(i) for i in resp.get("Items", [])]
        if "LastEvaluatedKey" not in resp:
            break
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
    return sorted(items, key=lambda i: i["sk"])


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.25, what: str = "condition") -> Any:
    """Poll `predicate` until it returns a truthy value (returned); TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout} s")


def wait_for_state(
    job_id: str, states: Iterable[str] | str, timeout: float = 60, interval: float = 0.25
) -> dict[str, Any]:
    """Poll the job item until its `state` is one of `states`; returns the item."""
    wanted = {states} if isinstance(states, str) else set(states)
    last: dict[str, Any] = {}

    def check() -> Any:
        item = job_item(job_id)
        last["item"] = item
        return item if item and item.get("state") in wanted else None

    try:
        return wait_until(check, timeout, interval, what=f"job {job_id} state in {sorted(wanted)}")
    except TimeoutError as exc:
        item = last.get("item")
        events = [(e.get("event"), e.get("state"), e.get("reason")) for e in timeline(job_id)]
        raise TimeoutError(
            f"{exc}; last state {item.get('state') if item else None!r} "
            f"(reason {item.get('reason') if item else None!r}); "
            f"timeline {events}"
        ) from None


def _pages(call: Callable[..., dict[str, Any]], field: str, max_pages: int = 1000, **kwargs: Any) -> list[Any]:
    """Every `field` item of a `nextToken`-paginated AWS call, at most `max_pages` pages."""
    items: list[Any] = []
    for _ in range(max_pages):
        page = call(**kwargs)
        items += page.get(field, [])
        kwargs["nextToken"] = page.get("nextToken")
        if not kwargs["nextToken"]:
            break
    return items


# ---- ECS and Step Functions -----------------------------------------------------------------------------
def leftovers(job_id: str) -> dict[str, list[str]]:
    """What a finished job must not leave behind: its tasks not stopped, and runners tasuki registered
    for it still on GitHub (neither deleted nor gone offline). Both lists are empty for a clean job."""
    tasks = [t["taskArn"] for t in ecs_tasks_for_job(job_id) if t["desiredStatus"] != "STOPPED"]
    runners = [
        r["name"]
        for r in mock_state()["runners"]
        if r["name"].startswith(f"tasuki-{job_id}-") and not r["deleted"] and r["status"] != "offline"
    ]
    return {"tasks": tasks, "runners": runners}


def ecs_tasks_for_job(job_id: str) -> list[dict[str, Any]]:
    """DescribeTasks (with tags) of every task, running or stopped, whose startedBy is `tasuki/<job_id>/...`."""
    ecs = boto("ecs")
    cluster = env()["TASUKI_CLUSTER"]
    arns: list[str] = []
    for desired in ("RUNNING", "STOPPED"):
        arns += _pages(ecs.list_tasks, "taskArns", 100, cluster=cluster, desiredStatus=desired, maxResults=100)
    arns = list(dict.fromkeys(arns))
    prefix = f"tasuki/{job_id}/"
    out = []
    for i in range(0, len(arns), 100):
        tasks = ecs.describe_tasks(cluster=cluster, tasks=arns[i : i + 100], include=["TAGS"]).get("tasks", [])
        out += [t for t in tasks if (t.get("startedBy") or "").startswith(prefix)]
    return sorted(out, key=lambda t: t.get("startedBy") or "")


def executions_for_job(job_id: str) -> list[dict[str, Any]]:
    """Step Functions executions of the runner-job state machine named `<job_id>-...` (DescribeExecution of each)."""
    sfn = boto("stepfunctions")
    executions = _pages(
        sfn.list_executions, "executions", 100, stateMachineArn=env()["TASUKI_STATE_MACHINE_ARN"], maxResults=1000
    )
    return [
        sfn.describe_execution(executionArn=e["executionArn"]) for e in executions if e["name"].startswith(f"{job_id}-")
    ]


def wait_for_executions_done(job_id: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Wait until the job has at least one execution and none is RUNNING; returns them."""

    def done() -> Any:
        execs = executions_for_job(job_id)
        return execs if execs and all(e["status"] != "RUNNING" for e in execs) else None

    return wait_until(done, timeout, interval=0.5, what=f"executions of job {job_id} finished")


def execution_history(execution_arn: str) -> list[dict[str, Any]]:
    return _pages(
        boto("stepfunctions").get_execution_history, "events", 1000, executionArn=execution_arn, maxResults=1000
    )


# ---- leak check ------------------------------------------------------------------------------------------
def leak_report(job_ids: Iterable[str] = (), logs: bool = True) -> list[str]:
    """Where any secret the mock handed out (webhook secret, installation tokens, JIT configs) shows up:
    execution input/output/history, ECS task descriptions (overrides), DynamoDB items of `job_ids`,
    webhook answers, and (if `logs`) every file in .tasuki/logs. Empty list: no leak found."""
    from harness.common import LOG_DIR

    values = [v for v in secrets_for_leak_check() if len(v) >= 16]
    sources: dict[str, str] = {}
    for job in job_ids:
        item = job_item(job)
        sources[f"job {job}: DynamoDB"] = json.dumps([item, timeline(job)], default=str)
        sources[f"job {job}: ECS tasks"] = json.dumps(ecs_tasks_for_job(job), default=str)
        for ex in executions_for_job(job):
            sources[f"job {job}: execution {ex['name']}"] = json.dumps(
                [ex, execution_history(ex["executionArn"])], default=str
            )
    sources["webhook answers"] = json.dumps([w.get("body") for w in mock_state()["webhooks_sent"]], default=str)
    if logs and LOG_DIR.is_dir():
        for path in sorted(LOG_DIR.glob("*.log")):
            sources[f"log {path.name}"] = path.read_text(errors="replace")
    findings = []
    for where, text in sources.items():
        for value in values:
            if value in text:
                kind = "installation token" if value.startswith("ghs_") else "secret"
                findings.append(f"{where}: contains a {kind} ({value[:6]}…)")
    return findings
