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
import os
import re
import secrets
import socket
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
    "lose_queued",
    "lose_in_progress",
    "lose_completed",
    "version_deprecated",
    "stop_grace_seconds",
    "waiting",
    "workflow_name",
}
READ_ONLY_LABELS = {"self-hosted", "linux", "x64", "arm64"}
TOKEN_ALPHABET = string.ascii_letters + string.digits

# ---- the App's webhook delivery log (https://docs.github.com/en/rest/apps/webhooks) -----------------
HOOK_DOCS = "https://docs.github.com/rest/apps/webhooks"
# "You can redeliver webhook deliveries that occurred in the past 3 days" and "All deliveries from the
# past 3 days will be listed" (https://docs.github.com/en/webhooks/testing-and-troubleshooting-webhooks/redelivering-webhooks)
HOOK_LOG_SECONDS = 3 * 24 * 3600
# per_page: "The number of results per page (max 100)", default 30 (components/parameters/per-page)
HOOK_PAGE_DEFAULT, HOOK_PAGE_MAX = 30, 100
# GitHub's cursors look like `v1_<number>`; clients must treat them as opaque (take them from `Link`)
CURSOR_RE = re.compile(r"^v1_(\d+)$")
# GitHub gives up on a webhook after 10 s ("timed out",
# https://docs.github.com/en/webhooks/testing-and-troubleshooting-webhooks/troubleshooting-webhooks#timed-out).
# Locally the webhook Lambda can be a cold `cargo run`, so the default is longer; set 10 to be GitHub.
WEBHOOK_TIMEOUT_SECONDS = float(os.environ.get("TASUKI_LOCAL_WEBHOOK_TIMEOUT_SECONDS") or 120)
# What a proxy in front of the webhook answers when it cannot reach it (behaviours lose_*): GitHub
# records "Invalid HTTP Response: 502" for a 4xx/5xx answer (troubleshooting-webhooks#invalid-http-response).
PROXY_502_BODY = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n"
    "<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)

# ---- REST rate limits (https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api)
RATE_DOCS = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
SECONDARY_DOCS = "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"
# "GitHub Apps authenticating with an installation access token use the installation's minimum rate
# limit of 5,000 requests per hour" -- per installation, shared by all its tokens. Unauthenticated
# requests: "60 requests per hour", by originating IP. The App's JWT requests have their own budget
# (5,000 here: GitHub does not document that figure).
RATE_LIMITS = {"installation": 5000, "app": 5000, "ip": 60}
RATE_WINDOW_SECONDS = 3600
GITHUB_FAULT_KINDS = {
    # kind -> (default status, statuses GitHub documents for it)
    # troubleshooting-the-rest-api#timeouts: a timeout answers a "Server Error" message; 5xx anywhere
    "server_error": (502, (500, 502, 503, 504)),
    # rate-limits-for-the-rest-api#exceeding-the-rate-limit: "a 403 or 429 response"
    "secondary_rate_limit": (403, (403, 429)),
    "primary_rate_limit": (403, (403, 429)),
}


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
        # the App's delivery log: one entry per attempt (first delivery and each redelivery), by id
        self.hook_log: list[dict[str, Any]] = []
        self.issued_cursors: set[str] = set()
        self._next_attempt_id = 30_000_000_000 + (int(time.time()) % 1_000_000) * 1000
        # REST rate-limit budgets ("installation:<id>", "app:<id>", "ip:<address>") and fault rules
        self.rate_limits: dict[str, dict[str, int]] = {}
        self.github_faults: list[dict[str, Any]] = []
        self._next_fault_id = 1
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
                # write: the local App is set up as for `spot=rerun` (infra/README.md, step 1)
                "actions": "write",
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
            "actions": "write",
            "metadata": "read",
        }
        with self.lock:
            self.tokens[token] = {"installation_id": installation_id, "expires": expires, "permissions": perms}
            self.leak_values.append(token)
        return {
            "token": token,
            "expires_at": now_rfc3339(timedelta(hours=1)),
            "permissions": perms,
            "repository_selection": "all",
        }

    def token_info(self, authorization: str | None) -> dict[str, Any] | None:
        """The unexpired installation token an `Authorization` header carries, if any."""
        if not authorization:
            return None
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return None
        with self.lock:
            info = self.tokens.get(value.strip())
        return info if info and info["expires"] > time.time() else None

    def token_ok(self, authorization: str | None) -> bool:
        return self.token_info(authorization) is not None

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
    def new_job(
        self,
        labels: list[str],
        private: bool,
        repository: str,
        behaviour: dict[str, Any],
        run: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        """A queued job: in a new run, or in attempt `run[1]` of run `run[0]` (a re-run)."""
        owner, _, repo = repository.partition("/")
        with self.lock:
            job_id = self._next_job_id
            self._next_job_id += 1
            if run is None:
                run = (self._next_run_id, 1)
                self._next_run_id += 1
        run_id, run_attempt = run
        p = copy.deepcopy(self.queued_fixture)
        p["action"] = "queued"
        now = now_rfc3339()
        full = f"{owner}/{repo}"
        wj = p["workflow_job"]
        wj.update(
            id=job_id,
            run_id=run_id,
            run_attempt=run_attempt,
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
            "run_attempt": run_attempt,
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

    def deliver(self, job_id: str | None, action: str, payload: dict[str, Any], lose: bool = False) -> dict[str, Any]:
        """Sign and send a new delivery (a new guid). `lose`: its first attempt never reaches the
        webhook -- a proxy in front of it answers 502 -- and GitHub never retries by itself
        (https://docs.github.com/en/webhooks/using-webhooks/handling-failed-webhook-deliveries);
        a redelivery does reach it."""
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
            self.deliveries[delivery_id] = {
                "job_id": job_id,
                "action": action,
                "body": body,
                "headers": headers,
                "lose_first": lose,
                "attempts": 0,
            }
            if job_id in self.jobs:
                self.jobs[job_id]["deliveries"].append(delivery_id)
        return self.send(delivery_id)

    def send(self, delivery_id: str) -> dict[str, Any]:
        """One attempt at delivering `delivery_id` (same bytes and headers every time): the first, or
        a redelivery. Every attempt is an entry of the App's delivery log (`hook-delivery-item`)."""
        with self.lock:
            d = self.deliveries[delivery_id]
            attempt_id = self._next_attempt_id
            self._next_attempt_id += 1
            redelivery = d["attempts"] > 0
            lose = bool(d["lose_first"]) and not redelivery
            d["attempts"] += 1
        started = time.time()
        if lose:
            # never reaches the webhook: the proxy in front of it fails (no POST is made)
            outcome: dict[str, Any] = {
                "status_code": 502,
                "status": "Invalid HTTP Response: 502",
                "parsed": {"raw": PROXY_502_BODY},
                "headers": {"Content-Type": "text/html", "Server": "proxy"},
                "payload": PROXY_502_BODY,
                "duration": 0.01,
            }
            log.info("webhook %s job %s delivery %s lost (proxy 502)", d["action"], d["job_id"], delivery_id)
        else:
            outcome = post_webhook_outcome(self.webhook_url, d["body"], d["headers"])
        status, resp = outcome["status_code"], outcome["parsed"]
        payload = json.loads(d["body"])
        wj = payload.get("workflow_job") or {}
        installation = payload.get("installation") if isinstance(payload.get("installation"), dict) else {}
        repository = payload.get("repository") if isinstance(payload.get("repository"), dict) else {}
        attempt = {
            "id": attempt_id,
            "guid": delivery_id,
            "delivered_epoch": started,
            "redelivery": redelivery,
            "duration": outcome["duration"],
            "status": outcome["status"],
            "status_code": status,
            "event": d["headers"]["X-GitHub-Event"],
            "action": payload.get("action"),
            "installation_id": installation.get("id"),
            "repository_id": repository.get("id"),
            "throttled_at": None,
            "request_headers": dict(d["headers"]),
            "response_headers": outcome["headers"],
            "response_payload": outcome["payload"],
            "job_id": d["job_id"],
        }
        entry = {
            "at": time.time(),
            "job_id": d["job_id"],
            "action": d["action"],
            "delivery_id": delivery_id,
            "attempt_id": attempt_id,
            "redelivery": redelivery,
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
            self.hook_log.append(attempt)
            self.webhooks_sent.append(entry)
        log.info("webhook %s job %s delivery %s -> %s", d["action"], d["job_id"], delivery_id, status)
        return {
            "job_id": d["job_id"],
            "delivery_id": delivery_id,
            "attempt_id": attempt_id,
            "status": status,
            "body": resp,
        }

    def redeliver_later(self, delivery_id: str, delay: float = 0.1) -> None:
        """Redeliver in the background, as GitHub queues a redelivery it accepted (202)."""

        def run() -> None:
            time.sleep(delay)
            try:
                self.send(delivery_id)
            except Exception:
                log.exception("redelivery of %s failed", delivery_id)

        threading.Thread(target=run, name=f"redeliver-{delivery_id[:8]}", daemon=True).start()

    # ---- the delivery log's REST shapes ---------------------------------------------------------------
    @staticmethod
    def hook_delivery_item(a: dict[str, Any]) -> dict[str, Any]:
        """`hook-delivery-item` of the REST description."""
        return {
            "id": a["id"],
            "guid": a["guid"],
            "delivered_at": datetime.fromtimestamp(a["delivered_epoch"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "redelivery": a["redelivery"],
            "duration": a["duration"],
            "status": a["status"],
            "status_code": a["status_code"],
            "event": a["event"],
            "action": a["action"],
            "installation_id": a["installation_id"],
            "repository_id": a["repository_id"],
            "throttled_at": a["throttled_at"],
        }

    def hook_delivery(self, a: dict[str, Any]) -> dict[str, Any]:
        """`hook-delivery` of the REST description: the item plus the request and the response."""
        item = self.hook_delivery_item(a)
        item["url"] = self.webhook_url
        with self.lock:
            body = self.deliveries[a["guid"]]["body"]
        item["request"] = {"headers": dict(a["request_headers"]), "payload": json.loads(body)}
        item["response"] = {
            "headers": dict(a["response_headers"]) if a["response_headers"] is not None else None,
            "payload": a["response_payload"],
        }
        return item

    def attempt(self, attempt_id: int) -> dict[str, Any] | None:
        with self.lock:
            return next((a for a in self.hook_log if a["id"] == attempt_id), None)

    # ---- REST rate limits and faults ------------------------------------------------------------------
    def identify(self, authorization: str | None, address: str) -> tuple[str, int | str]:
        """Whose budget a request spends: ("installation", id), ("app", app id) or ("ip", address)."""
        scheme, _, value = (authorization or "").strip().partition(" ")
        value = value.strip()
        if scheme.lower() in ("bearer", "token") and value:
            with self.lock:
                info = self.tokens.get(value)
            if info and info["expires"] > time.time():
                return "installation", info["installation_id"]
            if scheme.lower() == "bearer" and verify_app_jwt(value, self.public_key, APP_ID) is None:
                return "app", APP_ID
        return "ip", address

    def charge(self, kind: str, who: int | str) -> dict[str, int]:
        """Spend one request of `who`'s primary budget; its state after (used > limit: refused)."""
        key = f"{kind}:{who}"
        now = int(time.time())
        with self.lock:
            budget = self.rate_limits.get(key)
            if budget is None or now >= budget["reset"]:
                budget = {"limit": RATE_LIMITS[kind], "used": 0, "reset": now + RATE_WINDOW_SECONDS}
                self.rate_limits[key] = budget
            refused = budget["used"] >= budget["limit"]
            if not refused:
                budget["used"] += 1
            return {**budget, "refused": int(refused)}

    def add_github_fault(self, spec: dict[str, Any]) -> dict[str, Any]:
        unknown = set(spec) - {"kind", "route", "times", "retry_after", "status"}
        if unknown:
            raise ValueError(f"unknown github fault field(s): {sorted(unknown)}")
        kind = spec.get("kind")
        if kind not in GITHUB_FAULT_KINDS:
            raise ValueError(f"kind must be one of {sorted(GITHUB_FAULT_KINDS)}, got {kind!r}")
        route = spec.get("route")
        names = sorted({r[2] for r in ROUTES})
        if route is not None and route not in names:
            raise ValueError(f"route must be one of {names} (or absent: any), got {route!r}")
        times = spec.get("times", 1)
        if not isinstance(times, int) or isinstance(times, bool) or times < 1:
            raise ValueError("times must be a positive integer (default 1)")
        retry_after = spec.get("retry_after")
        if retry_after is not None and (
            not isinstance(retry_after, int) or isinstance(retry_after, bool) or retry_after < 0
        ):
            raise ValueError("retry_after must be a non-negative integer (seconds)")
        default_status, statuses = GITHUB_FAULT_KINDS[kind]
        status = spec.get("status", default_status)
        if status not in statuses:
            raise ValueError(f"a {kind} fault answers one of {list(statuses)}, got {status!r}")
        with self.lock:
            rule = {
                "id": self._next_fault_id,
                "kind": kind,
                "route": route,
                "times": times,
                "retry_after": retry_after,
                "status": status,
                "matched": 0,
            }
            self._next_fault_id += 1
            self.github_faults.append(rule)
            return dict(rule)

    def match_github_fault(self, route: str) -> dict[str, Any] | None:
        """The first live rule for `route` (counted: a rule lives until it matched `times` times)."""
        with self.lock:
            for rule in self.github_faults:
                if rule["matched"] < rule["times"] and rule["route"] in (None, route):
                    rule["matched"] += 1
                    return dict(rule)
        return None

    def run_jobs(self, repository: str, run_id: int) -> list[dict[str, Any]]:
        """The jobs of a run's latest attempt."""
        with self.lock:
            jobs = [j for j in self.jobs.values() if j["repository"] == repository and j["run_id"] == run_id]
        latest = max((j["run_attempt"] for j in jobs), default=0)
        return [j for j in jobs if j["run_attempt"] == latest]

    def workflow_run(self, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        """`workflow-run` (actions/get-workflow-run) of a run's latest attempt: completed when every
        job is, queued while every job is, in_progress otherwise."""
        first = jobs[0]
        payload = first["queued_payload"]
        wj, repo = payload["workflow_job"], payload["repository"]
        full, run_id = first["repository"], first["run_id"]
        statuses = {j["status"] for j in jobs}
        status = "completed" if statuses == {"completed"} else "queued" if statuses == {"queued"} else "in_progress"
        conclusions = {j["conclusion"] for j in jobs}
        conclusion = None if status != "completed" else "success" if conclusions == {"success"} else "failure"
        # the webhook's repository has every field of minimal-repository; only those are kept
        minimal = self.rest_spec.doc["components"]["schemas"]["minimal-repository"]["properties"]
        repository = {k: v for k, v in repo.items() if k in minimal}
        api = f"https://api.github.com/repos/{full}/actions/runs/{run_id}"
        return {
            "id": run_id,
            "name": wj.get("workflow_name"),
            "node_id": "WFR_" + b64(str(run_id))[:12],
            "head_branch": wj.get("head_branch"),
            "head_sha": wj.get("head_sha"),
            "path": ".github/workflows/ci.yml",
            "display_title": wj.get("workflow_name") or "CI",
            "run_number": run_id % 10_000,
            "run_attempt": first["run_attempt"],
            "event": "push",
            "status": status,
            "conclusion": conclusion,
            "workflow_id": 161335,
            "url": api,
            "html_url": f"https://github.com/{full}/actions/runs/{run_id}",
            "pull_requests": [],
            "created_at": wj.get("created_at"),
            "updated_at": now_rfc3339(),
            "jobs_url": f"{api}/jobs",
            "logs_url": f"{api}/logs",
            "check_suite_url": f"https://api.github.com/repos/{full}/check-suites/{run_id}",
            "artifacts_url": f"{api}/artifacts",
            "cancel_url": f"{api}/cancel",
            "rerun_url": f"{api}/rerun",
            "workflow_url": f"https://api.github.com/repos/{full}/actions/workflows/161335",
            "head_commit": None,
            "repository": repository,
            "head_repository": repository,
        }

    def rerun(self, job: dict[str, Any]) -> dict[str, Any]:
        """Re-run a job: a new job (new id) in the run's next attempt, queued shortly after the
        answer, as GitHub queues it (https://docs.github.com/en/actions/managing-workflow-runs-and-deployments/managing-workflow-runs/re-running-workflows-and-jobs)."""
        behaviour = {k: v for k, v in job["behaviour"].items() if k != "lose_queued"}
        new = self.new_job(
            job["labels"], job["private"], job["repository"], behaviour, run=(job["run_id"], job["run_attempt"] + 1)
        )

        def queue() -> None:
            time.sleep(0.2)
            self.deliver(new["job_id"], "queued", new["queued_payload"])

        threading.Thread(target=queue, name=f"rerun-{new['job_id']}", daemon=True).start()
        return new

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
                "hook_deliveries": [
                    {**self.hook_delivery_item(a), "job_id": a["job_id"]}
                    for a in sorted(self.hook_log, key=lambda a: -a["id"])
                ],
                "rate_limit": {
                    key: {
                        "limit": b["limit"],
                        "used": b["used"],
                        "remaining": max(0, b["limit"] - b["used"]),
                        "reset": b["reset"],
                        "resource": "core",
                    }
                    for key, b in self.rate_limits.items()
                },
                "github_fault_rules": [dict(r) for r in self.github_faults],
                "ecs_events_sent": copy.deepcopy(self.ecs_events_sent),
                "runner_events": copy.deepcopy(self.runner_events),
                "lambda_invocations": copy.deepcopy(self.gateway.invocations),
            }


def post_webhook(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    outcome = post_webhook_outcome(url, body, headers)
    return outcome["status_code"], outcome["parsed"]


def post_webhook_outcome(url: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """POST one delivery; what GitHub's delivery log would say of it.

    `status` wording from https://docs.github.com/en/webhooks/testing-and-troubleshooting-webhooks/troubleshooting-webhooks:
    "OK" for a 2xx, "Invalid HTTP Response: <code>" for a 4xx/5xx, "timed out", "failed to connect to
    network" (the server refused the connection), "failed to connect to host" (the name does not
    resolve); the last three have no HTTP status: `status_code` 0.
    """
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    started = time.monotonic()
    resp_headers: dict[str, str] | None = None
    data = b""
    try:
        with urllib.request.urlopen(req, timeout=WEBHOOK_TIMEOUT_SECONDS) as resp:
            status, data, resp_headers = resp.status, resp.read(), dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        status, data, resp_headers = exc.code, exc.read(), dict(exc.headers.items())
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, (TimeoutError, socket.timeout)):
            text = "timed out"
        elif isinstance(reason, socket.gaierror):
            text = "failed to connect to host"
        else:
            text = "failed to connect to network"
        return {
            "status_code": 0,
            "status": text,
            "parsed": {"error": f"webhook endpoint unreachable: {exc}"},
            "headers": None,
            "payload": None,
            "duration": round(time.monotonic() - started, 3),
        }
    duration = round(time.monotonic() - started, 3)
    parsed: Any
    try:
        parsed = json.loads(data) if data else None
    except (ValueError, UnicodeDecodeError):
        parsed = {"raw": data[:2000].decode(errors="replace")}
    return {
        "status_code": status,
        "status": "OK" if 200 <= status < 300 else f"Invalid HTTP Response: {status}",
        "parsed": parsed,
        "headers": resp_headers,
        "payload": data.decode(errors="replace") if data else None,
        "duration": duration,
    }


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
    ("POST", re.compile(rf"^/repos/{REPO}/actions/jobs/(?P<job>\d+)/rerun$"), "rerun_job", "token"),
    ("GET", re.compile(rf"^/repos/{REPO}/actions/runs/(?P<run>\d+)$"), "get_run", "token"),
    # the App's delivery log: "You must use a JWT to access this endpoint" (https://docs.github.com/en/rest/apps/webhooks)
    ("GET", re.compile(r"^/app/hook/deliveries$"), "list_hook_deliveries", "jwt"),
    ("GET", re.compile(r"^/app/hook/deliveries/(?P<delivery_id>\d+)$"), "get_hook_delivery", "jwt"),
    ("POST", re.compile(r"^/app/hook/deliveries/(?P<delivery_id>\d+)/attempts$"), "redeliver_hook_delivery", "jwt"),
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
    ("GET", re.compile(r"^/_mock/github-faults$"), "mock_github_faults_get"),
    ("POST", re.compile(r"^/_mock/github-faults$"), "mock_github_faults_add"),
    ("DELETE", re.compile(r"^/_mock/github-faults$"), "mock_github_faults_clear"),
    ("POST", re.compile(r"^/_mock/hook-deliveries/(?P<attempt_id>\d+)/age$"), "mock_age_hook_delivery"),
]


def rate_limit_headers(limit: int, used: int, reset: int) -> list[tuple[str, str]]:
    """The primary rate limit's headers, sent with every REST answer
    (https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#checking-the-status-of-your-rate-limit)."""
    return [
        ("x-ratelimit-limit", str(limit)),
        ("x-ratelimit-remaining", str(max(0, limit - used))),
        ("x-ratelimit-used", str(used)),
        ("x-ratelimit-reset", str(reset)),
        ("x-ratelimit-resource", "core"),
    ]


def primary_rate_limit_error(kind: str, who: int | str, status: int, request_id: str) -> HttpError:
    """GitHub's answer to a spent primary budget: "API rate limit exceeded for installation ID <id>."
    (the wording GitHub sends; rate-limits-for-the-rest-api#exceeding-the-rate-limit: 403 or 429)."""
    if kind == "installation":
        subject = f"installation ID {who}"
    elif kind == "app":
        subject = f"app ID {who}"  # not documented: modelled on the installation's wording
    else:
        subject = str(who)
    message = f"API rate limit exceeded for {subject}."
    if kind == "ip":
        message += (
            " (But here's the good news: Authenticated requests get a higher rate limit. Check out the "
            "documentation for more details.)"
        )
    message += f" If you reach out to GitHub Support for help, please include the request ID {request_id}."
    return HttpError(status, message, RATE_DOCS)


class HttpError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        documentation_url: str = DOCS,
        headers: list[tuple[str, str]] | None = None,
        **extra: Any,
    ):
        super().__init__(message)
        self.status = status
        self.headers = list(headers or [])
        # GitHub's error answers carry the status as a string (`basic-error` in the REST description)
        self.body = {"message": message, "documentation_url": documentation_url, "status": str(status), **extra}


class GitHubHandler(BaseHandler):
    @property
    def world(self) -> World:
        return self.server.world  # type: ignore[attr-defined]

    def handle_request(self) -> None:
        self.operation: openapi_check.Operation | None = None
        self.request_id = (
            f"{secrets.token_hex(2).upper()}:{secrets.token_hex(3).upper()}:{secrets.token_hex(4).upper()}"
        )
        self.rate_headers: list[tuple[str, str]] = []
        self.extra_headers: list[tuple[str, str]] = []
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
            self.extra_headers += exc.headers
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
        # every request spends the primary budget of whoever made it (installation, App, or the IP
        # for a request without valid credentials), and every answer says what is left
        kind, who = self.world.identify(self.headers.get("Authorization"), self.client_address[0])
        self.spend(kind, who)
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
        fault = self.world.match_github_fault(name)
        if fault is not None:
            # GitHub can answer 5xx and rate limits on any operation, after it knows who asks
            self.answer_fault(fault, kind, who)
            return
        problems = spec.check_request(op, path_params, self.query, self.raw)
        if problems:
            self.world.note_invalid_request(self.command, path, op, problems)
            self.reply(422, openapi_check.invalid_request_body(op, problems))
            return
        status, body = getattr(self, name)(**m.groupdict())
        self.reply(status, body)

    def spend(self, kind: str, who: int | str) -> None:
        """Charge one request to `who`; refuse it when the hour's budget is spent (primary rate limit)."""
        budget = self.world.charge(kind, who)
        self.rate_headers = rate_limit_headers(budget["limit"], budget["used"], budget["reset"])
        if budget["refused"]:
            raise primary_rate_limit_error(kind, who, 403, self.request_id)

    def answer_fault(self, fault: dict[str, Any], kind: str, who: int | str) -> None:
        status = fault["status"]
        wait = fault["retry_after"] if fault["retry_after"] is not None else 60
        log.info("github fault %s answers %s %s with %s", fault["kind"], self.command, self.path, status)
        if fault["kind"] == "server_error":
            # "you will receive a timeout response and a "Server Error" message"
            # (https://docs.github.com/en/rest/using-the-rest-api/troubleshooting-the-rest-api#timeouts)
            self.reply(status, {"message": "Server Error"})
        elif fault["kind"] == "secondary_rate_limit":
            # 403 or 429, `retry-after`, "an error message that indicates that you exceeded a secondary
            # rate limit" (rate-limits-for-the-rest-api#exceeding-the-rate-limit); GitHub's wording,
            # and it sends no x-ratelimit-* headers with it
            self.rate_headers = []
            self.extra_headers.append(("retry-after", str(wait)))
            self.reply(
                status,
                {
                    "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
                    "again. If you reach out to GitHub Support for help, please include the request ID "
                    f"{self.request_id}.",
                    "documentation_url": SECONDARY_DOCS,
                    "status": str(status),
                },
            )
        else:
            # primary: 403 or 429 with x-ratelimit-remaining 0; retry after x-ratelimit-reset
            # (rate-limits-for-the-rest-api#exceeding-the-rate-limit)
            err = primary_rate_limit_error(kind, who, status, self.request_id)
            limit = RATE_LIMITS[kind]
            self.rate_headers = rate_limit_headers(limit, limit, int(time.time()) + wait)
            self.reply(err.status, err.body)

    def send_reply(self, status: int, body: Any) -> None:
        """A control-API answer: not GitHub's, not checked."""
        if status == 204 or body is None:
            self.send_bytes(status, b"", [])
        else:
            self.send_json(status, body)

    def reply(self, status: int, body: Any) -> None:
        """A GitHub answer: checked against the operation's response description before it is sent.
        (An error status an operation does not document is checked against `basic-error`: GitHub
        answers 401/403/404/429/5xx on any operation, many descriptions list none of them.)"""
        op = getattr(self, "operation", None)
        if op is not None:
            for problem in self.world.rest_spec.check_response(op, status, body):
                self.world.spec_violation(problem)
        headers = [
            ("X-GitHub-Request-Id", getattr(self, "request_id", uuid.uuid4().hex[:20].upper())),
            ("X-GitHub-Api-Version-Selected", "2022-11-28"),
            *getattr(self, "rate_headers", []),
            *getattr(self, "extra_headers", []),
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

    def get_run(self, owner: str, repo: str, run: str) -> tuple[int, Any]:
        jobs = self.world.run_jobs(f"{owner}/{repo}", int(run))
        if not jobs:
            raise HttpError(404, "Not Found")
        return 200, self.world.workflow_run(jobs)

    def rerun_job(self, owner: str, repo: str, job: str) -> tuple[int, Any]:
        """actions/re-run-job-for-workflow-run: needs Actions write; a run still in progress cannot be
        re-run (GitHub offers re-runs only once the run completed; the 403 wording is not documented)."""
        self.require_permission("actions", "write")
        with self.world.lock:
            j = self.world.jobs.get(job)
        if j is None or j["repository"] != f"{owner}/{repo}":
            raise HttpError(404, "Not Found")
        latest = self.world.run_jobs(j["repository"], j["run_id"])
        if j not in latest or any(other["status"] != "completed" for other in latest):
            raise HttpError(403, "This workflow run is not completed")
        self.world.rerun(j)
        return 201, {}

    def require_permission(self, permission: str, access: str) -> None:
        """The installation token's permissions (`Resource not accessible by integration`, 403, when
        it lacks one: https://docs.github.com/en/rest/using-the-rest-api/troubleshooting-the-rest-api)."""
        perms = (self.world.token_info(self.headers.get("Authorization")) or {}).get("permissions") or {}
        granted = perms.get(permission)
        if granted != access and not (access == "read" and granted == "write"):
            raise HttpError(403, "Resource not accessible by integration")

    # ---- the App's delivery log (https://docs.github.com/en/rest/apps/webhooks) -----------------------
    def list_hook_deliveries(self) -> tuple[int, Any]:
        """apps/list-webhook-deliveries: attempts newest first, `per_page` (default 30, max 100),
        `cursor` pagination with a `Link: <…>; rel="next"` header, `status` success (200-399) or
        failure (400-599) as the parameter's description says (an unreachable webhook, status_code 0,
        is in neither)."""
        per_page = HOOK_PAGE_DEFAULT
        if self.query.get("per_page"):
            # "(max 100)": GitHub serves at most 100, whatever is asked
            per_page = min(max(int(self.query["per_page"][-1]), 1), HOOK_PAGE_MAX)
        cursors = self.query.get("cursor")
        cursor = cursors[-1] if cursors else None
        statuses = self.query.get("status")
        wanted = statuses[-1] if statuses else None
        with self.world.lock:
            start: int | None = None
            if cursor is not None:
                m = CURSOR_RE.match(cursor)
                if m is None or cursor not in self.world.issued_cursors:
                    # the description documents 400 (`bad_request`) for this operation; GitHub's wording
                    # for a cursor it did not issue is not documented
                    raise HttpError(400, f"Bad Request: invalid cursor {cursor!r}", HOOK_DOCS)
                start = int(m.group(1))
            oldest = time.time() - HOOK_LOG_SECONDS
            entries = [
                a
                for a in sorted(self.world.hook_log, key=lambda a: -a["id"])
                if a["delivered_epoch"] >= oldest
                and (start is None or a["id"] <= start)
                and (
                    wanted is None
                    or (wanted == "success" and 200 <= a["status_code"] <= 399)
                    or (wanted == "failure" and 400 <= a["status_code"] <= 599)
                )
            ]
            page, rest = entries[:per_page], entries[per_page:]
            if rest:
                next_cursor = f"v1_{rest[0]['id']}"
                self.world.issued_cursors.add(next_cursor)
                host = self.headers.get("Host") or f"127.0.0.1:{self.connection.getsockname()[1]}"
                query = {"per_page": str(per_page), "cursor": next_cursor}
                if wanted is not None:
                    query["status"] = wanted
                link = f"http://{host}/app/hook/deliveries?{urllib.parse.urlencode(query)}"
                # https://docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api
                self.extra_headers.append(("Link", f'<{link}>; rel="next"'))
            return 200, [World.hook_delivery_item(a) for a in page]

    def _attempt(self, delivery_id: str) -> dict[str, Any]:
        a = self.world.attempt(int(delivery_id))
        if a is None:
            raise HttpError(404, "Not Found", HOOK_DOCS)
        return a

    def get_hook_delivery(self, delivery_id: str) -> tuple[int, Any]:
        """apps/get-webhook-delivery: the attempt, its request (headers, parsed payload) and response."""
        a = self._attempt(delivery_id)
        with self.world.lock:
            return 200, self.world.hook_delivery(a)

    def redeliver_hook_delivery(self, delivery_id: str) -> tuple[int, Any]:
        """apps/redeliver-webhook-delivery: 202 `{}` (components/responses/accepted), then GitHub makes
        a new attempt of the same delivery (same guid, `redelivery: true`, a new id) a moment later.
        Only deliveries of the past 3 days can be redelivered
        (https://docs.github.com/en/webhooks/testing-and-troubleshooting-webhooks/redelivering-webhooks)."""
        a = self._attempt(delivery_id)
        with self.world.lock:
            first = min(x["delivered_epoch"] for x in self.world.hook_log if x["guid"] == a["guid"])
        if first < time.time() - HOOK_LOG_SECONDS:
            # GitHub's wording for this refusal is not documented; 422 is the description's answer
            # for a request it will not carry out (`validation_failed`)
            raise HttpError(
                422,
                "Validation Failed",
                HOOK_DOCS,
                errors=[
                    {
                        "resource": "HookDelivery",
                        "field": "delivered_at",
                        "code": "custom",
                        "message": "Only deliveries from the past 3 days can be redelivered",
                    }
                ],
            )
        self.world.redeliver_later(a["guid"])
        return 202, {}

    # ---- control API ---------------------------------------------------------------------------------
    def mock_github_faults_get(self) -> tuple[int, Any]:
        with self.world.lock:
            return 200, {"rules": [dict(r) for r in self.world.github_faults]}

    def mock_github_faults_add(self) -> tuple[int, Any]:
        try:
            rule = self.world.add_github_fault(self.json_body())
        except ValueError as exc:
            raise HttpError(422, str(exc)) from exc
        return 201, rule

    def mock_github_faults_clear(self) -> tuple[int, Any]:
        with self.world.lock:
            n = len(self.world.github_faults)
            self.world.github_faults.clear()
        return 200, {"cleared": n}

    def mock_age_hook_delivery(self, attempt_id: str) -> tuple[int, Any]:
        """Move an attempt `seconds` into the past (to test the 3-day windows)."""
        seconds = self.json_body().get("seconds")
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
            raise HttpError(422, "seconds must be a non-negative number")
        with self.world.lock:
            a = next((x for x in self.world.hook_log if x["id"] == int(attempt_id)), None)
            if a is None:
                raise HttpError(404, f"unknown delivery attempt {attempt_id}")
            a["delivered_epoch"] -= seconds
            return 200, World.hook_delivery_item(a)

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
        # lose_queued: the first `queued` delivery never reaches the webhook (recorded as failed)
        result = self.world.deliver(
            job["job_id"], "queued", job["queued_payload"], lose=bool(behaviour.get("lose_queued"))
        )
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
