"""GitHub mock: the REST endpoints tasuki calls, simulated `workflow_job` webhooks, control API.

Shapes follow GitHub's REST API description (apps, actions/self-hosted-runners) and real webhook
payloads (tests/fixtures/webhooks). Secrets it hands out (installation tokens, JIT configs) are
kept in memory for the leak check and never logged.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import hmac
import json
import logging
import re
import secrets
import string
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from harness import openapi_check
from harness.common import APP_ID, RUNNER_GROUP_ID, load_fixture
from harness.gateway import EcsLedger, Gateway
from harness.httputil import BaseHandler

log = logging.getLogger("github")

DOCS = "https://docs.github.com/rest"
# the runner simulator's behaviours (tests/harness/README.md, "Simulated GitHub jobs and runners")
BEHAVIOURS = {
    "never_register",
    "stop_early",
    "conclusion",
    "hold",
    "spot_interruption",
    "assign_to",
    "lose_in_progress",
    "lose_completed",
    "version_deprecated",
    "stop_grace_seconds",
    "waiting",
    "workflow_name",
}
READ_ONLY_LABELS = {"self-hosted", "linux", "x64", "arm64"}
TOKEN_ALPHABET = string.ascii_letters + string.digits


def now_rfc3339(offset: timedelta = timedelta(0)) -> str:
    return (datetime.now(UTC) + offset).strftime("%Y-%m-%dT%H:%M:%SZ")


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def b64(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _be(n: int, length: int) -> str:
    """A big-endian unsigned integer of `length` bytes, base64: how Newtonsoft writes .NET's byte[]."""
    return b64(n.to_bytes(length, "big"))


def jit_config(runner_id: int, name: str, scope: tuple[str, str], work_folder: str) -> tuple[str, str]:
    """An `encoded_jit_config` shaped like GitHub's, and the base64 private exponent (for the leak list).

    GitHub's is base64 of a JSON object mapping the runner's config file names to the base64 of each
    file; the runner writes each file into its root (actions/runner src/Runner.Listener/Runner.cs,
    `GetJitConfig`: `ConvertFromJson<Dictionary<string, string>>`, `File.WriteAllBytes(Path.Combine(root,
    key), FromBase64String(value))`). The files, as the runner itself serialises them (StringUtil.ConvertToJson:
    Newtonsoft, Formatting.Indented, VssCamelCasePropertyNamesContractResolver -> camelCase names):
    - `.runner`: RunnerSettings (src/Runner.Common/ConfigurationStore.cs: AgentId, AgentName, PoolId,
      PoolName, Ephemeral, ServerUrl, GitHubUrl, WorkFolder, UseV2Flow, ServerUrlV2);
    - `.credentials`: CredentialData (src/Runner.Common/CredentialData.cs: Scheme, Data) with the OAuth
      data ConfigurationManager writes (src/Runner.Listener/Configuration/ConfigurationManager.cs:
      clientId, authorizationUrl, requireFipsCryptography = bool.ToString() -> "True");
    - `.credentials_rsaparams`: RSAParametersSerializable (src/Runner.Listener/Configuration/IRSAKeyManager.cs:
      d, dp, dq, exponent, inverseQ, modulus, p, q as base64 byte arrays) of a fresh 2048-bit key.
    The whole is ~4.5 KB, like GitHub's (about 4.2 KB and more).
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv = key.private_numbers()
    pub = priv.public_numbers
    size = (pub.n.bit_length() + 7) // 8  # 256; .NET wants D as long as the modulus, the rest half of it
    half = (size + 1) // 2
    rsaparams = {
        "d": _be(priv.d, size),
        "dp": _be(priv.dmp1, half),
        "dq": _be(priv.dmq1, half),
        "exponent": _be(pub.e, 3),
        "inverseQ": _be(priv.iqmp, half),
        "modulus": _be(pub.n, size),
        "p": _be(priv.p, half),
        "q": _be(priv.q, half),
    }
    service = secrets.token_urlsafe(36).replace("-", "a").replace("_", "b")
    runner_file = {
        "agentId": runner_id,
        "agentName": name,
        "poolId": 1,
        "poolName": "Default",
        "ephemeral": True,  # JIT runners are ephemeral: one job, then GitHub removes them
        "serverUrl": f"https://pipelinesghubeus{secrets.randbelow(30) + 1}.actions.githubusercontent.com/{service}/",
        "gitHubUrl": f"https://github.com/{scope[1]}",
        "workFolder": work_folder,
        "useV2Flow": True,
        "serverUrlV2": "https://broker.actions.githubusercontent.com/",
    }
    credentials = {
        "scheme": "OAuth",
        "data": {
            "clientId": str(uuid.uuid4()),
            "authorizationUrl": f"https://vstoken.actions.githubusercontent.com/_apis/oauth2/token/{uuid.uuid4()}",
            "requireFipsCryptography": "True",
        },
    }
    files = {
        ".runner": b64(json.dumps(runner_file, indent=2)),
        ".credentials": b64(json.dumps(credentials, indent=2)),
        ".credentials_rsaparams": b64(json.dumps(rsaparams, indent=2)),
    }
    return b64(json.dumps(files)), rsaparams["d"]


def verify_app_jwt(token: str, public_key: Any, app_id: int) -> str | None:
    """None if `token` is a valid GitHub App JWT (RS256 by the App key, iss == app id), else why not."""
    parts = token.split(".")
    if len(parts) != 3:
        return "A JSON web token could not be decoded"
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError):
        return "A JSON web token could not be decoded"
    if not isinstance(header, dict) or header.get("alg") != "RS256":
        return "A JSON web token could not be decoded (alg must be RS256)"
    try:
        public_key.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return "A JSON web token could not be decoded (bad signature)"
    if not isinstance(claims, dict):
        return "A JSON web token could not be decoded"
    if claims.get("iss") not in (app_id, str(app_id)):
        return "'Issuer' claim ('iss') must be the App ID"
    now = time.time()
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        return "'Expiration time' claim ('exp') must be a numeric value"
    if exp <= now:
        return (
            "'Expiration time' claim ('exp') must be a numeric value representing the future time "
            "at which the assertion expires"
        )
    if exp > now + 600 + 60:
        return "'Expiration time' claim ('exp') is too far in the future"
    if iat is not None and (not isinstance(iat, (int, float)) or iat > now + 60):
        return "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"
    return None


class World:
    """Everything the mock and the runner simulator know. One lock guards it all."""

    def __init__(
        self, webhook_url: str, webhook_secret: str, private_key_pem: str, ledger: EcsLedger, gateway: Gateway
    ):
        self.lock = threading.RLock()
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.public_key = serialization.load_pem_private_key(private_key_pem.encode(), password=None).public_key()
        self.ledger = ledger
        self.gateway = gateway
        self.tokens: dict[str, dict[str, Any]] = {}
        self.runners: dict[int, dict[str, Any]] = {}
        self.jit_configs: dict[str, str] = {}  # runner name -> encoded_jit_config (plaintext)
        self.leak_values: list[str] = [webhook_secret]
        self.jobs: dict[str, dict[str, Any]] = {}
        self.deliveries: dict[str, dict[str, Any]] = {}
        self.webhooks_sent: list[dict[str, Any]] = []
        self.ecs_events_sent: list[dict[str, Any]] = []
        self.runner_events: list[dict[str, Any]] = []
        self._next_runner_id = 1000
        self._next_label_id = 1
        base = (int(time.time()) % 1_000_000) * 1000
        self._next_job_id = 7_000_000_000 + base
        self._next_run_id = 9_000_000_000 + base
        # GitHub's own descriptions: every REST answer and webhook the mock makes is checked against them
        self.rest_spec = openapi_check.rest_spec()
        self.webhook_spec = openapi_check.webhook_spec()
        self.spec_violations: list[dict[str, Any]] = []  # the mock broke GitHub's description: a mock bug
        self.invalid_requests: list[dict[str, Any]] = []  # tasuki (or a test) sent what GitHub refuses
        self.queued_fixture = load_fixture("workflow_job.queued.2.json")
        self.in_progress_fixture = load_fixture("workflow_job.in_progress.3.json")
        self.completed_fixture = load_fixture("workflow_job.completed.2.json")

    # ---- GitHub's descriptions --------------------------------------------------------------------
    def spec_violation(self, problem: str) -> None:
        """The mock answered or sent something GitHub's description does not allow: a bug in the mock.
        Logged as an error, listed in /_mock/state `spec_violations` and in /_mock/health `problems`."""
        log.error("GitHub description violated by the mock: %s", problem)
        with self.lock:
            self.spec_violations.append({"at": time.time(), "problem": problem})

    def note_invalid_request(self, method: str, path: str, op: openapi_check.Operation, problems: list[str]) -> None:
        log.warning("refused %s %s (%s): %s", method, path, op.operation_id, "; ".join(problems))
        with self.lock:
            self.invalid_requests.append(
                {
                    "at": time.time(),
                    "method": method,
                    "path": path,
                    "operation_id": op.operation_id,
                    "problems": list(problems),
                }
            )

    def installation(self, installation_id: int, owner: str) -> dict[str, Any]:
        """An `installation` (REST description, components/schemas/installation) of the tasuki App."""
        account_id = 100_000 + sum(owner.encode())
        return {
            "id": installation_id,
            "account": {
                "login": owner,
                "id": account_id,
                "node_id": "O_" + b64(owner)[:12],
                "avatar_url": f"https://avatars.githubusercontent.com/u/{account_id}?v=4",
                "gravatar_id": "",
                "url": f"https://api.github.com/users/{owner}",
                "html_url": f"https://github.com/{owner}",
                "followers_url": f"https://api.github.com/users/{owner}/followers",
                "following_url": f"https://api.github.com/users/{owner}/following{{/other_user}}",
                "gists_url": f"https://api.github.com/users/{owner}/gists{{/gist_id}}",
                "starred_url": f"https://api.github.com/users/{owner}/starred{{/owner}}{{/repo}}",
                "subscriptions_url": f"https://api.github.com/users/{owner}/subscriptions",
                "organizations_url": f"https://api.github.com/users/{owner}/orgs",
                "repos_url": f"https://api.github.com/users/{owner}/repos",
                "events_url": f"https://api.github.com/users/{owner}/events{{/privacy}}",
                "received_events_url": f"https://api.github.com/users/{owner}/received_events",
                "type": "Organization",
                "user_view_type": "public",
                "site_admin": False,
            },
            "repository_selection": "all",
            "access_tokens_url": f"https://api.github.com/app/installations/{installation_id}/access_tokens",
            "repositories_url": "https://api.github.com/installation/repositories",
            "html_url": f"https://github.com/organizations/{owner}/settings/installations/{installation_id}",
            "app_id": APP_ID,
            "app_slug": "tasuki-local",
            "target_id": account_id,
            "target_type": "Organization",
            "permissions": {
                "administration": "write",
                "organization_self_hosted_runners": "write",
                "actions": "read",
                "metadata": "read",
            },
            "events": ["workflow_job"],
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
            "single_file_name": None,
            "has_multiple_single_files": False,
            "single_file_paths": [],
            "suspended_by": None,
            "suspended_at": None,
        }

    # ---- tokens -----------------------------------------------------------------------------------
    def issue_token(self, installation_id: int, permissions: dict[str, str] | None) -> dict[str, Any]:
        token = "ghs_" + "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(36))
        expires = time.time() + 3600
        perms = permissions or {
            "administration": "write",
            "organization_self_hosted_runners": "write",
            "actions": "read",
            "metadata": "read",
        }
        with self.lock:
            self.tokens[token] = {"installation_id": installation_id, "expires": expires}
            self.leak_values.append(token)
        return {
            "token": token,
            "expires_at": now_rfc3339(timedelta(hours=1)),
            "permissions": perms,
            "repository_selection": "all",
        }

    def token_ok(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return False
        with self.lock:
            info = self.tokens.get(value.strip())
        if not info:
            return False
        return info["expires"] > time.time()

    # ---- runners ----------------------------------------------------------------------------------
    def create_runner(self, scope: tuple[str, str], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = body["name"]
        with self.lock:
            if any(r["name"] == name and not r["deleted"] for r in self.runners.values()):
                return 409, {
                    "message": f"Already exists - A runner with the name {name} already exists.",
                    "documentation_url": DOCS,
                }
            runner_id = self._next_runner_id
            self._next_runner_id += 1
            labels = []
            for label in body["labels"]:
                labels.append(
                    {
                        "id": self._next_label_id,
                        "name": label,
                        "type": "read-only" if label.lower() in READ_ONLY_LABELS else "custom",
                    }
                )
                self._next_label_id += 1
            runner = {
                "id": runner_id,
                "name": name,
                "os": "linux",
                "status": "offline",
                "busy": False,
                "labels": labels,
                "runner_group_id": body["runner_group_id"],
                "scope": scope,
                "deleted": False,
                "deleted_by": None,
                "job_id": None,
                "task_arn": None,
                "booted": False,
            }
            encoded, private_d = jit_config(runner_id, name, scope, body.get("work_folder") or "_work")
            self.runners[runner_id] = runner
            self.jit_configs[name] = encoded
            self.leak_values += [encoded, private_d]
            log.info("issued JIT config for runner %s (id %s, %s %s)", name, runner_id, *scope)
            return 201, {"runner": self.public_runner(runner), "encoded_jit_config": encoded}

    @staticmethod
    def public_runner(r: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": r["id"],
            "name": r["name"],
            "os": r["os"],
            "status": r["status"],
            "busy": r["busy"],
            "runner_group_id": r["runner_group_id"],
            "labels": [dict(label) for label in r["labels"]],
        }

    def find_runner(self, scope: tuple[str, str], runner_id: int) -> dict[str, Any] | None:
        with self.lock:
            r = self.runners.get(runner_id)
            if r is None or r["deleted"] or r["scope"] != scope:
                return None
            return r

    def runner_by_name(self, name: str) -> dict[str, Any] | None:
        with self.lock:
            found = [r for r in self.runners.values() if r["name"] == name]
            return found[-1] if found else None

    # ---- jobs and webhooks ------------------------------------------------------------------------
    def new_job(self, labels: list[str], private: bool, repository: str, behaviour: dict[str, Any]) -> dict[str, Any]:
        owner, _, repo = repository.partition("/")
        with self.lock:
            job_id = self._next_job_id
            run_id = self._next_run_id
            self._next_job_id += 1
            self._next_run_id += 1
        p = copy.deepcopy(self.queued_fixture)
        p["action"] = "queued"
        now = now_rfc3339()
        full = f"{owner}/{repo}"
        wj = p["workflow_job"]
        wj.update(
            id=job_id,
            run_id=run_id,
            run_attempt=1,
            status="queued",
            conclusion=None,
            labels=list(labels),
            created_at=now,
            started_at=now,
            completed_at=None,
            runner_id=None,
            runner_name=None,
            runner_group_id=None,
            runner_group_name=None,
            name="build",
            # free text on GitHub: `name:` of the workflow file, any characters
            workflow_name=str(behaviour.get("workflow_name") or "CI"),
            node_id="CR_" + secrets.token_hex(8),
            run_url=f"https://api.github.com/repos/{full}/actions/runs/{run_id}",
            url=f"https://api.github.com/repos/{full}/actions/jobs/{job_id}",
            html_url=f"https://github.com/{full}/actions/runs/{run_id}/job/{job_id}",
            check_run_url=f"https://api.github.com/repos/{full}/check-runs/{job_id}",
            steps=[],
        )
        r = p["repository"]
        r["id"] = 600_000_000 + job_id % 100_000_000
        r["name"] = repo
        r["full_name"] = full
        r["private"] = bool(private)
        r["visibility"] = "private" if private else "public"
        r["html_url"] = f"https://github.com/{full}"
        r["url"] = f"https://api.github.com/repos/{full}"
        r["owner"] = dict(r["owner"])
        r["owner"].update(
            login=owner,
            id=100_000 + sum(owner.encode()),
            type="Organization",
            url=f"https://api.github.com/users/{owner}",
            html_url=f"https://github.com/{owner}",
        )
        p["organization"] = {
            "login": owner,
            "id": r["owner"]["id"],
            "node_id": "O_" + b64(owner)[:12],
            "url": f"https://api.github.com/orgs/{owner}",
            "repos_url": f"https://api.github.com/orgs/{owner}/repos",
            "events_url": f"https://api.github.com/orgs/{owner}/events",
            "hooks_url": f"https://api.github.com/orgs/{owner}/hooks",
            "issues_url": f"https://api.github.com/orgs/{owner}/issues",
            "members_url": f"https://api.github.com/orgs/{owner}/members{{/member}}",
            "public_members_url": f"https://api.github.com/orgs/{owner}/public_members{{/member}}",
            "avatar_url": f"https://avatars.githubusercontent.com/u/{r['owner']['id']}?v=4",
            "description": "",
        }
        job = {
            "job_id": str(job_id),
            "run_id": run_id,
            "run_attempt": 1,
            "repository": full,
            "private": bool(private),
            "labels": list(labels),
            "behaviour": behaviour,
            "status": "queued",
            "conclusion": None,
            "runner_id": None,
            "runner_name": None,
            "deliveries": [],
            "queued_payload": p,
            "complete_event": threading.Event(),
            "complete_conclusion": None,
        }
        with self.lock:
            self.jobs[str(job_id)] = job
        return job

    def waiting_payload(self, job: dict[str, Any]) -> dict[str, Any]:
        p = copy.deepcopy(job["queued_payload"])
        p["action"] = "waiting"
        p["workflow_job"]["status"] = "waiting"
        return p

    def derived_payload(self, job: dict[str, Any], action: str, conclusion: str | None = None) -> dict[str, Any]:
        """in_progress / completed payload of `job`, built from the matching fixture."""
        q = job["queued_payload"]
        fixture = self.in_progress_fixture if action == "in_progress" else self.completed_fixture
        p = copy.deepcopy(fixture)
        p["action"] = action
        for key in ("repository", "organization", "installation", "sender"):
            if key in q:
                p[key] = copy.deepcopy(q[key])
            else:
                p.pop(key, None)
        wj = copy.deepcopy(p["workflow_job"])
        qj = q["workflow_job"]
        for key in (
            "id",
            "run_id",
            "run_attempt",
            "labels",
            "workflow_name",
            "name",
            "head_branch",
            "head_sha",
            "run_url",
            "url",
            "html_url",
            "check_run_url",
            "node_id",
            "created_at",
        ):
            wj[key] = copy.deepcopy(qj.get(key))
        wj["status"] = action
        with self.lock:
            runner_id, runner_name = job["runner_id"], job["runner_name"]
        if runner_id is not None:
            wj.update(
                runner_id=runner_id,
                runner_name=runner_name,
                runner_group_id=RUNNER_GROUP_ID,
                runner_group_name="Default",
            )
        else:
            wj.update(runner_id=None, runner_name=None, runner_group_id=None, runner_group_name=None, steps=[])
        if action == "in_progress":
            wj.update(started_at=now_rfc3339(), conclusion=None, completed_at=None)
        else:
            wj.update(conclusion=conclusion, completed_at=now_rfc3339())
            if runner_id is None:
                wj["started_at"] = wj.get("created_at")
            for step in wj.get("steps") or []:
                step["conclusion"] = conclusion if conclusion != "cancelled" else "skipped"
                step["status"] = "completed"
        p["workflow_job"] = wj
        return p

    def deliver(self, job_id: str | None, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload, separators=(",", ":")).encode()
        delivery_id = str(uuid.uuid4())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/tasuki-local",
            "X-GitHub-Event": "workflow_job",
            "X-GitHub-Delivery": delivery_id,
            "X-GitHub-Hook-ID": "424242001",
            "X-GitHub-Hook-Installation-Target-Type": "integration",
            "X-GitHub-Hook-Installation-Target-ID": str(APP_ID),
            "X-Hub-Signature": "sha1=" + hmac.new(self.webhook_secret.encode(), body, hashlib.sha1).hexdigest(),
            "X-Hub-Signature-256": sign(self.webhook_secret, body),
        }
        # checked against @octokit/openapi-webhooks (webhooks.workflow-job-<action>) before it is sent
        for problem in self.webhook_spec.check("workflow_job", payload, headers):
            self.spec_violation(problem)
        with self.lock:
            self.deliveries[delivery_id] = {"job_id": job_id, "action": action, "body": body, "headers": headers}
            if job_id in self.jobs:
                self.jobs[job_id]["deliveries"].append(delivery_id)
        return self.send(delivery_id)

    def send(self, delivery_id: str) -> dict[str, Any]:
        with self.lock:
            d = self.deliveries[delivery_id]
        status, resp = post_webhook(self.webhook_url, d["body"], d["headers"])
        wj = json.loads(d["body"]).get("workflow_job") or {}
        entry = {
            "at": time.time(),
            "job_id": d["job_id"],
            "action": d["action"],
            "delivery_id": delivery_id,
            "status": status,
            "body": resp,
            "request_sha256": hashlib.sha256(d["body"]).hexdigest(),
            "signature": d["headers"]["X-Hub-Signature-256"],
            "workflow_job": {
                k: wj.get(k)
                for k in (
                    "id",
                    "run_id",
                    "run_attempt",
                    "status",
                    "conclusion",
                    "labels",
                    "runner_id",
                    "runner_name",
                    "runner_group_id",
                )
            },
        }
        with self.lock:
            self.webhooks_sent.append(entry)
        log.info("webhook %s job %s delivery %s -> %s", d["action"], d["job_id"], delivery_id, status)
        return {"job_id": d["job_id"], "delivery_id": delivery_id, "status": status, "body": resp}

    def job_summary(self, job: dict[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in job.items() if k not in ("queued_payload", "complete_event")}

    def state(self) -> dict[str, Any]:
        with self.lock:
            ledger = self.ledger.snapshot()
            return {
                "jobs": [self.job_summary(j) for j in self.jobs.values()],
                "runners": [
                    {
                        "id": r["id"],
                        "name": r["name"],
                        "status": r["status"],
                        "busy": r["busy"],
                        "deleted": r["deleted"],
                        "deleted_by": r["deleted_by"],
                        "scope": list(r["scope"]),
                        "labels": [label["name"] for label in r["labels"]],
                        "job_id": r["job_id"],
                        "task_arn": r["task_arn"],
                        "booted": r["booted"],
                    }
                    for r in self.runners.values()
                ],
                "run_task_requests": ledger["run_task_requests"],
                "fault_rules": ledger["fault_rules"],
                "start_execution_requests": ledger["start_execution_requests"],
                "spec_violations": copy.deepcopy(self.spec_violations),
                "invalid_requests": copy.deepcopy(self.invalid_requests),
                "spec_version": self.rest_spec.version,
                "issued_jit_configs_count": len(self.jit_configs),
                "installation_tokens_count": len(self.tokens),
                "webhooks_sent": copy.deepcopy(self.webhooks_sent),
                "ecs_events_sent": copy.deepcopy(self.ecs_events_sent),
                "runner_events": copy.deepcopy(self.runner_events),
                "lambda_invocations": copy.deepcopy(self.gateway.invocations),
            }


def post_webhook(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            status, data = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, data = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 0, {"error": f"webhook endpoint unreachable: {exc}"}
    try:
        return status, json.loads(data) if data else None
    except (ValueError, UnicodeDecodeError):
        return status, {"raw": data[:2000].decode(errors="replace")}


REPO = r"(?P<owner>[^/]+)/(?P<repo>[^/]+)"
# (method, path, handler, credential GitHub wants: "jwt" = the App's JWT, "token" = an installation token)
ROUTES: list[tuple[str, re.Pattern[str], str, str | None]] = [
    ("POST", re.compile(r"^/app/installations/(?P<iid>\d+)/access_tokens$"), "access_tokens", "jwt"),
    ("GET", re.compile(r"^/app/installations/(?P<iid>\d+)$"), "get_installation", "jwt"),
    ("GET", re.compile(rf"^/repos/{REPO}/installation$"), "repo_installation", "jwt"),
    ("POST", re.compile(rf"^/repos/{REPO}/actions/runners/generate-jitconfig$"), "jit_repo", "token"),
    ("POST", re.compile(r"^/orgs/(?P<org>[^/]+)/actions/runners/generate-jitconfig$"), "jit_org", "token"),
    ("GET", re.compile(rf"^/repos/{REPO}/actions/runners$"), "list_runners_repo", "token"),
    ("GET", re.compile(r"^/orgs/(?P<org>[^/]+)/actions/runners$"), "list_runners_org", "token"),
    ("GET", re.compile(rf"^/repos/{REPO}/actions/runners/(?P<rid>\d+)$"), "get_runner_repo", "token"),
    ("DELETE", re.compile(rf"^/repos/{REPO}/actions/runners/(?P<rid>\d+)$"), "delete_runner_repo", "token"),
    ("GET", re.compile(r"^/orgs/(?P<org>[^/]+)/actions/runners/(?P<rid>\d+)$"), "get_runner_org", "token"),
    ("DELETE", re.compile(r"^/orgs/(?P<org>[^/]+)/actions/runners/(?P<rid>\d+)$"), "delete_runner_org", "token"),
    ("GET", re.compile(rf"^/repos/{REPO}/actions/jobs/(?P<job>\d+)$"), "get_job", "token"),
]
CONTROL_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"^/_mock/state$"), "mock_state"),
    ("GET", re.compile(r"^/_mock/health$"), "mock_health"),
    ("POST", re.compile(r"^/_mock/jobs$"), "mock_new_job"),
    ("POST", re.compile(r"^/_mock/redeliver$"), "mock_redeliver"),
    ("POST", re.compile(r"^/_mock/jobs/(?P<job>\d+)/queue-again$"), "mock_queue_again"),
    ("POST", re.compile(r"^/_mock/jobs/(?P<job>\d+)/cancel$"), "mock_cancel"),
    ("POST", re.compile(r"^/_mock/jobs/(?P<job>\d+)/complete$"), "mock_complete"),
    ("GET", re.compile(r"^/_mock/faults$"), "mock_faults_get"),
    ("POST", re.compile(r"^/_mock/faults$"), "mock_faults_add"),
    ("DELETE", re.compile(r"^/_mock/faults$"), "mock_faults_clear"),
    ("GET", re.compile(r"^/_mock/secrets-for-leak-check$"), "mock_secrets"),
    ("GET", re.compile(r"^/_mock/spec$"), "mock_spec"),
]


class HttpError(Exception):
    def __init__(self, status: int, message: str, documentation_url: str = DOCS, **extra: Any):
        super().__init__(message)
        self.status = status
        # GitHub's error answers carry the status as a string (`basic-error` in the REST description)
        self.body = {"message": message, "documentation_url": documentation_url, "status": str(status), **extra}


class GitHubHandler(BaseHandler):
    @property
    def world(self) -> World:
        return self.server.world  # type: ignore[attr-defined]

    def handle_request(self) -> None:
        self.operation: openapi_check.Operation | None = None
        try:
            self.raw = self.read_body()
            split = urllib.parse.urlsplit(self.path)
            path = re.sub(r"/{2,}", "/", split.path)
            if path != "/" and path.endswith("/"):
                path = path[:-1]
            self.query = urllib.parse.parse_qs(split.query)
            for method, pattern, name in CONTROL_ROUTES:
                m = pattern.match(path)
                if m and method == self.command:
                    status, body = getattr(self, name)(**m.groupdict())
                    self.send_reply(status, body)
                    return
            if path.startswith("/_mock/"):
                raise HttpError(404, "Not Found")
            self.github_request(path)
        except HttpError as exc:
            self.reply(exc.status, exc.body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:
            log.exception("mock error on %s %s", self.command, self.path)
            with contextlib.suppress(OSError):
                self.reply(500, {"message": f"mock error: {exc}"})

    def github_request(self, path: str) -> None:
        """A GitHub REST call: routed like GitHub's description says, checked against it both ways."""
        spec = self.world.rest_spec
        op, path_params, known = spec.match(self.command, path)
        self.operation = op
        if op is None:
            # GitHub answers 404 for a path (or a method on it) its API does not have
            raise HttpError(404, "Not Found")
        for method, pattern, name, auth in ROUTES:  # noqa: B007 -- name/auth: the matched route, used after the loop
            m = pattern.match(path)
            if m and method == self.command:
                break
        else:
            self.world.spec_violation(
                f"{self.command} {op.template}: the mock does not implement {op.operation_id}, which tasuki called"
            )
            raise HttpError(404, "Not Found", op.doc_url)
        if auth == "jwt":
            self.require_app_jwt()
        elif auth == "token":
            self.require_installation_token()
        problems = spec.check_request(op, path_params, self.query, self.raw)
        if problems:
            self.world.note_invalid_request(self.command, path, op, problems)
            self.reply(422, openapi_check.invalid_request_body(op, problems))
            return
        status, body = getattr(self, name)(**m.groupdict())
        self.reply(status, body)

    def send_reply(self, status: int, body: Any) -> None:
        """A control-API answer: not GitHub's, not checked."""
        if status == 204 or body is None:
            self.send_bytes(status, b"", [])
        else:
            self.send_json(status, body)

    def reply(self, status: int, body: Any) -> None:
        """A GitHub answer: checked against the operation's response description before it is sent."""
        op = getattr(self, "operation", None)
        if op is not None:
            for problem in self.world.rest_spec.check_response(op, status, body):
                self.world.spec_violation(problem)
        headers = [
            ("X-GitHub-Request-Id", uuid.uuid4().hex[:20].upper()),
            ("X-GitHub-Api-Version-Selected", "2022-11-28"),
            ("X-RateLimit-Limit", "5000"),
            ("X-RateLimit-Remaining", "4999"),
            ("X-RateLimit-Used", "1"),
            ("X-RateLimit-Resource", "core"),
            ("X-RateLimit-Reset", str(int(time.time()) + 3600)),
        ]
        if status == 204 or body is None:
            self.send_bytes(status, b"", headers)
        else:
            self.send_json(status, body, headers)

    def json_body(self) -> dict[str, Any]:
        if not self.raw:
            return {}
        try:
            data = json.loads(self.raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, "Problems parsing JSON") from exc
        if not isinstance(data, dict):
            raise HttpError(400, "Problems parsing JSON")
        return data

    # ---- auth ---------------------------------------------------------------------------------------
    def require_app_jwt(self) -> None:
        auth = (self.headers.get("Authorization") or "").strip()
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HttpError(401, "A JSON web token could not be decoded")
        problem = verify_app_jwt(token.strip(), self.world.public_key, APP_ID)
        if problem:
            raise HttpError(401, problem)

    def require_installation_token(self) -> None:
        if not self.world.token_ok(self.headers.get("Authorization")):
            raise HttpError(401, "Bad credentials")

    # ---- GitHub REST (credentials and the request's schema were checked by github_request) ----------
    def access_tokens(self, iid: str) -> tuple[int, Any]:
        body = self.json_body()
        perms = body.get("permissions") if isinstance(body.get("permissions"), dict) else None
        return 201, self.world.issue_token(int(iid), perms)

    def get_installation(self, iid: str) -> tuple[int, Any]:
        owner = self.world.queued_fixture.get("organization", {}).get("login", "octo-org")
        return 200, self.world.installation(int(iid), owner)

    def repo_installation(self, owner: str, repo: str) -> tuple[int, Any]:
        iid = self.world.queued_fixture.get("installation", {}).get("id", 1)
        return 200, self.world.installation(iid, owner)

    def _jit(self, scope: tuple[str, str]) -> tuple[int, Any]:
        body = self.json_body()  # its schema (name, runner_group_id, labels 1..100, work_folder) holds
        if not body["name"].strip() or not all(label.strip() for label in body["labels"]):
            # past the schema: GitHub's model validation (`validation_failed_simple`: errors are strings)
            raise HttpError(422, "Validation Failed", errors=["Name and labels can't be blank"])
        group = body["runner_group_id"]
        if group != RUNNER_GROUP_ID:
            raise HttpError(
                404, f"Not Found (runner group {group} does not exist; the local mock has only {RUNNER_GROUP_ID})"
            )
        return self.world.create_runner(scope, body)

    def jit_repo(self, owner: str, repo: str) -> tuple[int, Any]:
        return self._jit(("repo", f"{owner}/{repo}"))

    def jit_org(self, org: str) -> tuple[int, Any]:
        return self._jit(("org", org))

    def _list(self, scope: tuple[str, str]) -> tuple[int, Any]:
        names = self.query.get("name")
        name = names[0] if names else None
        with self.world.lock:
            runners = [
                World.public_runner(r)
                for r in self.world.runners.values()
                if not r["deleted"] and r["scope"] == scope and (name is None or r["name"] == name)
            ]
        return 200, {"total_count": len(runners), "runners": runners}

    def list_runners_repo(self, owner: str, repo: str) -> tuple[int, Any]:
        return self._list(("repo", f"{owner}/{repo}"))

    def list_runners_org(self, org: str) -> tuple[int, Any]:
        return self._list(("org", org))

    def _get_runner(self, scope: tuple[str, str], rid: str) -> tuple[int, Any]:
        r = self.world.find_runner(scope, int(rid))
        if r is None:
            raise HttpError(404, "Not Found")
        with self.world.lock:
            return 200, World.public_runner(r)

    def _delete_runner(self, scope: tuple[str, str], rid: str) -> tuple[int, Any]:
        with self.world.lock:
            r = self.world.find_runner(scope, int(rid))
            if r is None:
                raise HttpError(404, "Not Found")
            if r["busy"]:
                raise HttpError(422, f'Bad request - Runner "{r["name"]}" is still running a job"')
            r["deleted"] = True
            r["deleted_by"] = "api"
            r["status"] = "offline"
        log.info("runner %s deleted through the API", rid)
        return 204, None

    def get_runner_repo(self, owner: str, repo: str, rid: str) -> tuple[int, Any]:
        return self._get_runner(("repo", f"{owner}/{repo}"), rid)

    def delete_runner_repo(self, owner: str, repo: str, rid: str) -> tuple[int, Any]:
        return self._delete_runner(("repo", f"{owner}/{repo}"), rid)

    def get_runner_org(self, org: str, rid: str) -> tuple[int, Any]:
        return self._get_runner(("org", org), rid)

    def delete_runner_org(self, org: str, rid: str) -> tuple[int, Any]:
        return self._delete_runner(("org", org), rid)

    def get_job(self, owner: str, repo: str, job: str) -> tuple[int, Any]:
        with self.world.lock:
            j = self.world.jobs.get(job)
            if j is None or j["repository"] != f"{owner}/{repo}":
                raise HttpError(404, "Not Found")
            action = j["status"]
        if action == "queued":
            wj = copy.deepcopy(j["queued_payload"]["workflow_job"])
        else:
            wj = self.world.derived_payload(j, action, j["conclusion"])["workflow_job"]
        return 200, wj

    # ---- control API ---------------------------------------------------------------------------------
    def mock_health(self) -> tuple[int, Any]:
        health = getattr(self.server, "health", None)
        answer: dict[str, Any] = dict(health()) if health else {"ok": True, "problems": []}
        with self.world.lock:
            violations = [v["problem"] for v in self.world.spec_violations]
        if violations:
            # a mock that breaks GitHub's description proves nothing: say so loudly
            answer["problems"] = list(answer.get("problems") or []) + [
                f"GitHub mock broke GitHub's description: {v}" for v in violations[-20:]
            ]
            answer["ok"] = False
        return 200, answer

    def mock_spec(self) -> tuple[int, Any]:
        """Which descriptions the mock checks against, and what it found."""
        with self.world.lock:
            return 200, {
                "rest_version": self.world.rest_spec.version,
                "rest_file": str(openapi_check.REST_SPEC_FILE),
                "webhook_file": str(openapi_check.WEBHOOK_SPEC_FILE),
                "spec_violations": copy.deepcopy(self.world.spec_violations),
                "invalid_requests": copy.deepcopy(self.world.invalid_requests),
            }

    def mock_state(self) -> tuple[int, Any]:
        return 200, self.world.state()

    def mock_new_job(self) -> tuple[int, Any]:
        body = self.json_body()
        labels = body.get("labels")
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise HttpError(422, "labels must be a non-empty list of strings")
        repository = body.get("repository") or "octo-org/app"
        if not isinstance(repository, str) or repository.count("/") != 1 or "" in repository.split("/"):
            raise HttpError(422, "repository must be owner/name")
        behaviour = body.get("behaviour") or {}
        if not isinstance(behaviour, dict):
            raise HttpError(422, "behaviour must be an object")
        unknown = set(behaviour) - BEHAVIOURS
        if unknown:
            raise HttpError(422, f"unknown behaviour key(s): {sorted(unknown)}")
        job = self.world.new_job(labels, bool(body.get("private", True)), repository, behaviour)
        if behaviour.get("waiting"):
            # a job behind an environment's protection rules: `waiting` first, `queued` once approved
            # (https://docs.github.com/webhooks/webhook-events-and-payloads#workflow_job, action `waiting`)
            self.world.deliver(job["job_id"], "waiting", self.world.waiting_payload(job))
        result = self.world.deliver(job["job_id"], "queued", job["queued_payload"])
        return 200, result

    def mock_redeliver(self) -> tuple[int, Any]:
        delivery_id = self.json_body().get("delivery_id")
        with self.world.lock:
            known = delivery_id in self.world.deliveries
        if not known:
            raise HttpError(404, f"unknown delivery {delivery_id!r}")
        assert isinstance(delivery_id, str)  # a key of world.deliveries
        return 200, self.world.send(delivery_id)

    def _job(self, job: str) -> dict[str, Any]:
        with self.world.lock:
            j = self.world.jobs.get(job)
        if j is None:
            raise HttpError(404, f"unknown job {job}")
        return j

    def mock_queue_again(self, job: str) -> tuple[int, Any]:
        j = self._job(job)
        return 200, self.world.deliver(j["job_id"], "queued", j["queued_payload"])

    def mock_cancel(self, job: str) -> tuple[int, Any]:
        j = self._job(job)
        with self.world.lock:
            if j["status"] == "completed":
                raise HttpError(409, f"job {job} is already completed ({j['conclusion']})")
            j["status"] = "completed"
            j["conclusion"] = "cancelled"
            j["complete_conclusion"] = "cancelled"
            j["complete_event"].set()
        payload = self.world.derived_payload(j, "completed", "cancelled")
        return 200, self.world.deliver(j["job_id"], "completed", payload)

    def mock_complete(self, job: str) -> tuple[int, Any]:
        j = self._job(job)
        conclusion = self.json_body().get("conclusion") or "success"
        with self.world.lock:
            if j["status"] != "in_progress":
                raise HttpError(409, f"job {job} is {j['status']}, not in_progress")
            j["complete_conclusion"] = conclusion
            j["complete_event"].set()
        return 200, {"job_id": job, "conclusion": conclusion}

    def mock_faults_get(self) -> tuple[int, Any]:
        return 200, {"rules": self.world.ledger.snapshot()["fault_rules"]}

    def mock_faults_add(self) -> tuple[int, Any]:
        try:
            rule = self.world.ledger.add_rule(self.json_body())
        except ValueError as exc:
            raise HttpError(422, str(exc)) from exc
        return 201, rule

    def mock_faults_clear(self) -> tuple[int, Any]:
        return 200, {"cleared": self.world.ledger.clear_rules()}

    def mock_secrets(self) -> tuple[int, Any]:
        with self.world.lock:
            return 200, {"values": list(self.world.leak_values)}
