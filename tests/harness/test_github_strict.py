"""The GitHub mock and the runner simulator are as strict as GitHub and tasuki-boot (issue 8).

Runs without the local stack: the GitHub mock is started in-process on 127.0.0.1 (ephemeral port),
the runner-simulator tests start moto's server in-process the same way. Run with
`.tasuki/venv/bin/python -m pytest -q tests/harness/test_github_strict.py`.

Sources: GitHub's REST and webhook descriptions (@octokit/openapi, @octokit/openapi-webhooks in
tests/node_modules); actions/runner (src/Runner.Listener/Runner.cs, src/Runner.Common/ConfigurationStore.cs,
CredentialData.cs, src/Runner.Listener/Configuration/IRSAKeyManager.cs, src/Misc/layoutroot/run.sh,
run-helper.sh.template); docs/contracts.md / the shared contract for tasuki-boot's exit statuses.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from harness import openapi_check
from harness.common import APP_ID
from harness.gateway import EcsLedger, Gateway
from harness.github_mock import GitHubHandler, World
from harness.httputil import QuietServer
from harness.setup_aws import generate_app_key

JIT_PATH = "/repos/octo-org/app/actions/runners/generate-jitconfig"
GOOD_JIT = {"name": "tasuki-1-1", "runner_group_id": 1, "labels": ["self-hosted", "tasuki"], "work_folder": "_work"}


# ---- in-process servers --------------------------------------------------------------------------------
class Recorder(BaseHTTPRequestHandler):
    """Answers 200 to every POST and keeps it (webhook deliveries, ecs-events invocations)."""

    def log_message(self, fmt: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.seen.append(  # type: ignore[attr-defined]
                {"path": self.path, "headers": dict(self.headers), "body": json.loads(body or b"null")}
            )
        out = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def serve(server: QuietServer) -> None:
    threading.Thread(target=server.serve_forever, daemon=True).start()


def wait_until(pred: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds / 0.05) + 1):  # bounded in count and time
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


class Mock:
    def __init__(self, world: World, port: int, recorder: QuietServer, key_pem: str):
        self.world = world
        self.key_pem = key_pem
        self.port = port
        self.recorder = recorder

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        status, payload, _ = self.call_h(method, path, body, headers, raw)
        return status, payload

    def call_h(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        """Like `call`, with the answer's headers (names lower-cased)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, payload, got = r.status, r.read(), r.headers
        except urllib.error.HTTPError as exc:
            status, payload, got = exc.code, exc.read(), exc.headers
        return status, json.loads(payload) if payload else None, {k.lower(): v for k, v in got.items()}

    def jwt(self) -> dict[str, str]:
        from harness.client import app_jwt

        return {"Authorization": f"Bearer {app_jwt(self.key_pem)}"}

    def token(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.world.issue_token(23154469, None)['token']}"}

    def hooks(self) -> list[dict[str, Any]]:
        with self.recorder.lock:  # type: ignore[attr-defined]
            return [x for x in self.recorder.seen if x["path"] == "/hook"]  # type: ignore[attr-defined]

    def events(self) -> list[dict[str, Any]]:
        with self.recorder.lock:  # type: ignore[attr-defined]
            return [x["body"] for x in self.recorder.seen if "ecs-events" in x["path"]]  # type: ignore[attr-defined]


def start_mock(moto_port: int = 0) -> tuple[Mock, list[QuietServer]]:
    recorder = QuietServer(("127.0.0.1", 0), Recorder)
    recorder.lock = threading.Lock()  # type: ignore[attr-defined]
    recorder.seen = []  # type: ignore[attr-defined]
    serve(recorder)
    ledger = EcsLedger()
    key_pem = generate_app_key()
    world = World(
        f"http://127.0.0.1:{recorder.server_address[1]}/hook", "s3cret", key_pem, ledger, Gateway(moto_port, 0, ledger)
    )
    gh = QuietServer(("127.0.0.1", 0), GitHubHandler)
    gh.world = world  # type: ignore[attr-defined]
    serve(gh)
    return Mock(world, gh.server_address[1], recorder, key_pem), [gh, recorder]


@pytest.fixture()
def mock() -> Iterator[Mock]:
    m, servers = start_mock()
    yield m
    for s in servers:
        s.shutdown()
        s.server_close()


def check_no_violations(m: Mock) -> None:
    status, state = m.call("GET", "/_mock/state")
    assert status == 200
    assert state["spec_violations"] == [], state["spec_violations"]


# ---- 1. the JIT config ---------------------------------------------------------------------------------
def test_jit_config_has_githubs_structure_and_a_real_2048_bit_rsa_key(mock: Mock) -> None:
    status, body = mock.call("POST", JIT_PATH, GOOD_JIT, mock.token())
    assert status == 201, body
    encoded = body["encoded_jit_config"]
    # GitHub's is about 4.2 KB (a 2048-bit key); above KMS Encrypt's 4 096-byte limit
    assert len(encoded) > 4096, len(encoded)
    files = json.loads(base64.b64decode(encoded, validate=True))
    assert set(files) == {".runner", ".credentials", ".credentials_rsaparams"}
    runner = json.loads(base64.b64decode(files[".runner"], validate=True))
    assert runner["agentId"] == body["runner"]["id"] and runner["agentName"] == "tasuki-1-1"
    assert runner["poolId"] == 1 and runner["poolName"] and runner["ephemeral"] is True
    assert runner["gitHubUrl"] == "https://github.com/octo-org/app" and runner["workFolder"] == "_work"
    assert runner["serverUrl"].startswith("https://") and runner["serverUrl"].endswith("/")
    creds = json.loads(base64.b64decode(files[".credentials"], validate=True))
    assert creds["scheme"] == "OAuth"
    assert set(creds["data"]) == {"clientId", "authorizationUrl", "requireFipsCryptography"}
    uuid.UUID(creds["data"]["clientId"])
    assert creds["data"]["authorizationUrl"].startswith("https://")
    params = json.loads(base64.b64decode(files[".credentials_rsaparams"], validate=True))
    assert set(params) == {"d", "dp", "dq", "exponent", "inverseQ", "modulus", "p", "q"}
    num = {k: int.from_bytes(base64.b64decode(v, validate=True), "big") for k, v in params.items()}
    assert len(base64.b64decode(params["modulus"])) == 256 and len(base64.b64decode(params["d"])) == 256
    # the parameters form one valid 2048-bit RSA key: build it and sign/verify with it
    public = rsa.RSAPublicNumbers(num["exponent"], num["modulus"])
    private = rsa.RSAPrivateNumbers(num["p"], num["q"], num["d"], num["dp"], num["dq"], num["inverseQ"], public)
    key = private.private_key()
    assert key.key_size == 2048 and num["p"] * num["q"] == num["modulus"]
    sig = key.sign(b"tasuki", padding.PKCS1v15(), hashes.SHA256())
    key.public_key().verify(sig, b"tasuki", padding.PKCS1v15(), hashes.SHA256())
    # a fresh key per runner, and every secret part is in the leak list
    status, other = mock.call("POST", JIT_PATH, {**GOOD_JIT, "name": "tasuki-1-2"}, mock.token())
    assert status == 201
    other_params = json.loads(
        base64.b64decode(json.loads(base64.b64decode(other["encoded_jit_config"]))[".credentials_rsaparams"])
    )
    assert other_params["modulus"] != params["modulus"]
    status, leaks = mock.call("GET", "/_mock/secrets-for-leak-check")
    assert encoded in leaks["values"] and params["d"] in leaks["values"]
    check_no_violations(mock)


# ---- 2a. requests are checked against GitHub's REST description ----------------------------------------------
@pytest.mark.parametrize(
    "body, detail",
    [
        ({k: v for k, v in GOOD_JIT.items() if k != "labels"}, '"labels" wasn\'t supplied.'),
        ({"work_folder": "_work"}, '"name", "runner_group_id", "labels" weren\'t supplied.'),
        ({**GOOD_JIT, "labels": []}, "For 'properties/labels', [] has fewer than 1 item(s)."),
        ({**GOOD_JIT, "labels": [f"l{i}" for i in range(101)]}, "For 'properties/labels', "),
        ({**GOOD_JIT, "labels": "tasuki"}, "For 'properties/labels', \"tasuki\" is not an array."),
        ({**GOOD_JIT, "labels": ["tasuki", 3]}, "For 'properties/labels/items', 3 is not a string."),
        ({**GOOD_JIT, "runner_group_id": "1"}, "For 'properties/runner_group_id', \"1\" is not an integer."),
        ({**GOOD_JIT, "work_folder": 3}, "For 'properties/work_folder', 3 is not a string."),
        (None, '"name", "runner_group_id", "labels" weren\'t supplied.'),
    ],
)
def test_generate_jitconfig_refuses_what_githubs_schema_refuses_with_githubs_error(
    mock: Mock, body: Any, detail: str
) -> None:
    status, answer = mock.call("POST", JIT_PATH, body, mock.token())
    assert status == 422, answer
    assert answer["message"].startswith("Invalid request.\n\n") and detail in answer["message"], answer["message"]
    assert answer["documentation_url"] == (
        "https://docs.github.com/rest/actions/self-hosted-runners"
        "#create-configuration-for-a-just-in-time-runner-for-a-repository"
    )
    assert answer["status"] == "422"
    status, state = mock.call("GET", "/_mock/state")
    [refused] = state["invalid_requests"]
    assert refused["operation_id"] == "actions/generate-runner-jitconfig-for-repo" and refused["problems"]
    assert state["issued_jit_configs_count"] == 0
    check_no_violations(mock)


def test_paths_methods_and_parameters_follow_the_description(mock: Mock) -> None:
    auth = mock.token()
    # a path GitHub does not have, and a method a known path does not take: 404 like GitHub
    assert mock.call("GET", "/repos/octo-org/app/actions/runnerz", None, auth)[0] == 404
    assert mock.call("PUT", JIT_PATH, GOOD_JIT, auth)[0] == 404
    # query parameters are typed: per_page is an integer
    status, answer = mock.call("GET", "/repos/octo-org/app/actions/runners?per_page=many", None, auth)
    assert status == 422 and "For 'per_page', \"many\" is not an integer." in answer["message"]
    assert mock.call("GET", "/repos/octo-org/app/actions/runners?per_page=100&name=x", None, auth)[0] == 200
    # credentials come before the schema, as on GitHub: no token, bad body -> 401
    assert mock.call("POST", JIT_PATH, {"labels": []})[0] == 401
    check_no_violations(mock)


# ---- 2b. every answer matches the description ------------------------------------------------------------
def test_every_answer_the_mock_gives_matches_githubs_description(mock: Mock) -> None:
    spec = openapi_check.rest_spec()
    answers: list[tuple[str, str, int, Any]] = []

    def call(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        status, answer = mock.call(method, path, body, headers)
        answers.append((method, path, status, answer))
        return status, answer

    from harness.client import app_jwt  # RS256 JWT by a key; the mock's key is the World's

    jwt = {"Authorization": f"Bearer {app_jwt(mock.key_pem)}"}
    assert call("POST", "/app/installations/23154469/access_tokens", {}, jwt)[0] == 201
    assert call("POST", "/app/installations/23154469/access_tokens", {}, {"Authorization": "Bearer x.y.z"})[0] == 401
    assert call("GET", "/app/installations/23154469", None, jwt)[0] == 200
    assert call("GET", "/repos/octo-org/app/installation", None, jwt)[0] == 200
    auth = mock.token()
    status, created = call("POST", JIT_PATH, GOOD_JIT, auth)
    assert status == 201
    rid = created["runner"]["id"]
    assert call("POST", JIT_PATH, GOOD_JIT, auth)[0] == 409
    assert call("POST", JIT_PATH, {**GOOD_JIT, "name": "other", "runner_group_id": 7}, auth)[0] == 404
    assert (
        call("POST", "/orgs/octo-org/actions/runners/generate-jitconfig", {**GOOD_JIT, "name": "org-1"}, auth)[0] == 201
    )
    assert call("GET", "/repos/octo-org/app/actions/runners?name=tasuki-1-1", None, auth)[0] == 200
    assert call("GET", "/orgs/octo-org/actions/runners", None, auth)[0] == 200
    assert call("GET", f"/repos/octo-org/app/actions/runners/{rid}", None, auth)[0] == 200
    assert call("GET", f"/orgs/octo-org/actions/runners/{rid}", None, auth)[0] == 404
    with mock.world.lock:
        mock.world.runners[rid]["busy"] = True
    assert call("DELETE", f"/repos/octo-org/app/actions/runners/{rid}", None, auth)[0] == 422
    with mock.world.lock:
        mock.world.runners[rid]["busy"] = False
    assert call("DELETE", f"/repos/octo-org/app/actions/runners/{rid}", None, auth)[0] == 204
    status, job = mock.call("POST", "/_mock/jobs", {"labels": ["self-hosted", "tasuki"], "repository": "octo-org/app"})
    assert status == 200
    assert call("GET", f"/repos/octo-org/app/actions/jobs/{job['job_id']}", None, auth)[0] == 200
    j = mock.world.jobs[str(job["job_id"])]
    for action in ("in_progress", "completed"):
        with mock.world.lock:
            j["status"], j["conclusion"] = action, ("success" if action == "completed" else None)
        assert call("GET", f"/repos/octo-org/app/actions/jobs/{job['job_id']}", None, auth)[0] == 200
    assert call("GET", "/repos/octo-org/app/actions/jobs/1", None, auth)[0] == 404

    # checked here too, independently of the mock's own check
    for method, path, status, answer in answers:
        op, _, _ = spec.match(method, path.split("?")[0])
        assert op is not None, (method, path)
        assert spec.check_response(op, status, answer) == [], (method, path, status, answer)
    check_no_violations(mock)


def test_an_answer_that_breaks_the_description_is_reported_loudly(mock: Mock, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = mock.token()
    status, created = mock.call("POST", JIT_PATH, GOOD_JIT, auth)
    assert status == 201
    original = World.public_runner
    monkeypatch.setattr(
        World, "public_runner", staticmethod(lambda r: {k: v for k, v in original(r).items() if k != "os"})
    )
    assert mock.call("GET", f"/repos/octo-org/app/actions/runners/{created['runner']['id']}", None, auth)[0] == 200
    status, state = mock.call("GET", "/_mock/state")
    [violation] = state["spec_violations"]
    assert "GET /repos/{owner}/{repo}/actions/runners/{runner_id} -> 200" in violation["problem"]
    assert '"os"' in violation["problem"]
    status, health = mock.call("GET", "/_mock/health")
    assert health["ok"] is False and any("os" in p for p in health["problems"])


# ---- 2c. webhooks match the webhook description --------------------------------------------------------
def test_webhooks_match_githubs_webhook_description_before_they_are_sent(mock: Mock) -> None:
    spec = openapi_check.webhook_spec()
    status, job = mock.call(
        "POST", "/_mock/jobs", {"labels": ["self-hosted", "tasuki"], "behaviour": {"waiting": True}}
    )
    assert status == 200
    j = mock.world.jobs[str(job["job_id"])]
    mock.world.deliver(j["job_id"], "in_progress", mock.world.derived_payload(j, "in_progress"))
    status, _ = mock.call("POST", f"/_mock/jobs/{job['job_id']}/cancel", {})
    assert status == 200
    hooks = mock.hooks()
    assert [h["body"]["action"] for h in hooks] == ["waiting", "queued", "in_progress", "completed"]
    for h in hooks:
        assert spec.check("workflow_job", h["body"], h["headers"]) == []
    check_no_violations(mock)

    # a payload that breaks the description is recorded before it goes out
    broken = mock.world.derived_payload(j, "completed", "failure")
    del broken["workflow_job"]["run_id"]
    mock.world.deliver(j["job_id"], "completed", broken)
    status, state = mock.call("GET", "/_mock/state")
    assert any(
        "webhook workflow-job-completed" in v["problem"] and "run_id" in v["problem"] for v in state["spec_violations"]
    ), state["spec_violations"]


# ---- 2d. the App's webhook delivery log (https://docs.github.com/en/rest/apps/webhooks) -------------------
HOOKS = "/app/hook/deliveries"


def queue(m: Mock, behaviour: dict[str, Any] | None = None) -> dict[str, Any]:
    status, job = m.call("POST", "/_mock/jobs", {"labels": ["self-hosted", "tasuki"], "behaviour": behaviour or {}})
    assert status == 200, job
    return job


def log_of(m: Mock) -> list[dict[str, Any]]:
    status, state = m.call("GET", "/_mock/state")
    assert status == 200
    return state["hook_deliveries"]


def header(h: dict[str, Any], name: str) -> str | None:
    return next((v for k, v in h["headers"].items() if k.lower() == name.lower()), None)


def listed(m: Mock, n: int) -> list[dict[str, Any]] | None:
    """The delivery log through the REST API, once it has `n` entries."""
    items = m.call("GET", HOOKS, None, m.jwt())[1]
    return items if len(items) == n else None


def hooks_of(m: Mock, guid: str) -> list[dict[str, Any]]:
    return [h for h in m.hooks() if header(h, "X-GitHub-Delivery") == guid]


def test_the_delivery_log_lists_attempts_newest_first_in_pages_linked_by_a_cursor(mock: Mock) -> None:
    jobs = [queue(mock) for _ in range(5)]
    jwt = mock.jwt()
    status, page, headers = mock.call_h("GET", f"{HOOKS}?per_page=2", None, jwt)
    assert status == 200 and len(page) == 2
    seen = list(page)
    for _ in range(10):  # bounded: 5 entries, 2 a page
        link = headers.get("link")
        if link is None:
            break
        assert link.startswith(f"<http://127.0.0.1:{mock.port}/app/hook/deliveries?per_page=2&cursor=v1_")
        assert link.endswith('>; rel="next"'), link
        status, page, headers = mock.call_h("GET", link[1:].split(">")[0].split(str(mock.port), 1)[1], None, jwt)
        assert status == 200 and 1 <= len(page) <= 2
        seen += page
    assert "link" not in headers, "the last page links nowhere"
    assert [d["guid"] for d in seen] == [j["delivery_id"] for j in reversed(jobs)]
    ids = [d["id"] for d in seen]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 5
    first = seen[-1]
    assert set(first) == {
        "id",
        "guid",
        "delivered_at",
        "redelivery",
        "duration",
        "status",
        "status_code",
        "event",
        "action",
        "installation_id",
        "repository_id",
        "throttled_at",
    }
    assert (first["event"], first["action"], first["status"], first["status_code"]) == (
        "workflow_job",
        "queued",
        "OK",
        200,
    )
    assert first["redelivery"] is False and first["throttled_at"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first["delivered_at"])
    assert first["installation_id"] == 23154469 and isinstance(first["repository_id"], int)
    # the status filter: success is 200-399, failure 400-599
    assert len(mock.call("GET", f"{HOOKS}?status=success", None, jwt)[1]) == 5
    assert mock.call("GET", f"{HOOKS}?status=failure", None, jwt)[1] == []
    check_no_violations(mock)


def test_the_delivery_log_serves_30_by_default_and_never_more_than_100(mock: Mock) -> None:
    job = queue(mock)
    for _ in range(104):
        mock.world.send(job["delivery_id"])
    jwt = mock.jwt()
    status, page, headers = mock.call_h("GET", HOOKS, None, jwt)
    assert (status, len(page)) == (200, 30) and "per_page=30&cursor=" in headers["link"]
    status, page, headers = mock.call_h("GET", f"{HOOKS}?per_page=500", None, jwt)
    assert (status, len(page)) == (200, 100) and "per_page=100&cursor=" in headers["link"]
    assert all(d["redelivery"] for d in page), "the newest 100 are the redeliveries"
    check_no_violations(mock)


def test_the_delivery_log_refuses_a_cursor_it_did_not_issue_and_an_untyped_page_size(mock: Mock) -> None:
    queue(mock)
    jwt = mock.jwt()
    status, answer = mock.call("GET", f"{HOOKS}?cursor=v1_1", None, jwt)
    assert status == 400 and "cursor" in answer["message"]
    assert mock.call("GET", f"{HOOKS}?cursor=garbage", None, jwt)[0] == 400
    status, answer = mock.call("GET", f"{HOOKS}?per_page=many", None, jwt)
    assert status == 422 and "For 'per_page', \"many\" is not an integer." in answer["message"]
    status, answer = mock.call("GET", f"{HOOKS}?status=lost", None, jwt)
    assert status == 422 and "status" in answer["message"]
    check_no_violations(mock)


def test_a_delivery_shows_the_request_it_sent_and_the_webhooks_answer(mock: Mock) -> None:
    job = queue(mock)
    [item] = mock.call("GET", HOOKS, None, mock.jwt())[1]
    status, delivery = mock.call("GET", f"{HOOKS}/{item['id']}", None, mock.jwt())
    assert status == 200
    assert {k: delivery[k] for k in item} == item
    [sent] = hooks_of(mock, job["delivery_id"])
    assert delivery["request"]["payload"] == sent["body"], "the parsed payload that was sent"
    assert delivery["request"]["headers"]["X-GitHub-Delivery"] == job["delivery_id"]
    assert delivery["request"]["headers"]["X-Hub-Signature-256"] == header(sent, "X-Hub-Signature-256")
    assert delivery["response"]["payload"] == "{}" and delivery["response"]["headers"]["Content-Type"]
    assert delivery["url"] == mock.world.webhook_url
    check_no_violations(mock)


def test_redelivery_is_accepted_then_made_as_a_new_attempt_of_the_same_delivery(mock: Mock) -> None:
    job = queue(mock)
    [first] = mock.call("GET", HOOKS, None, mock.jwt())[1]
    status, answer = mock.call("POST", f"{HOOKS}/{first['id']}/attempts", None, mock.jwt())
    assert (status, answer) == (202, {})
    wait_until(lambda: len(hooks_of(mock, job["delivery_id"])) == 2, 10, "the redelivery")
    original, again = hooks_of(mock, job["delivery_id"])
    assert again["body"] == original["body"] and again["headers"] == original["headers"], "same bytes and headers"
    newest, oldest = wait_until(lambda: listed(mock, 2), 10, "the redelivery logged")
    assert oldest == first
    assert newest["guid"] == first["guid"] and newest["id"] > first["id"]
    assert (newest["redelivery"], newest["status"], newest["status_code"]) == (True, "OK", 200)
    check_no_violations(mock)


def test_unknown_delivery_ids_are_404(mock: Mock) -> None:
    queue(mock)
    assert mock.call("GET", f"{HOOKS}/123", None, mock.jwt())[0] == 404
    assert mock.call("POST", f"{HOOKS}/123/attempts", None, mock.jwt())[0] == 404
    check_no_violations(mock)


def test_the_delivery_log_wants_the_apps_jwt_and_refuses_an_installation_token(mock: Mock) -> None:
    job = queue(mock)
    [item] = mock.call("GET", HOOKS, None, mock.jwt())[1]
    for method, path in (("GET", HOOKS), ("GET", f"{HOOKS}/{item['id']}"), ("POST", f"{HOOKS}/{item['id']}/attempts")):
        status, answer = mock.call(method, path, None, mock.token())
        assert (status, answer["message"]) == (401, "A JSON web token could not be decoded"), (path, answer)
        assert mock.call(method, path)[0] == 401
    time.sleep(0.3)
    assert len(hooks_of(mock, job["delivery_id"])) == 1, "nothing redelivered"
    check_no_violations(mock)


def test_only_deliveries_of_the_past_3_days_are_listed_and_redelivered(mock: Mock) -> None:
    old, new = queue(mock), queue(mock)
    items = mock.call("GET", HOOKS, None, mock.jwt())[1]
    [aged] = [i for i in items if i["guid"] == old["delivery_id"]]
    status, _ = mock.call("POST", f"/_mock/hook-deliveries/{aged['id']}/age", {"seconds": 3 * 24 * 3600 + 60})
    assert status == 200
    status, answer = mock.call("POST", f"{HOOKS}/{aged['id']}/attempts", None, mock.jwt())
    assert status == 422 and "3 days" in answer["errors"][0]["message"], answer
    assert [i["guid"] for i in mock.call("GET", HOOKS, None, mock.jwt())[1]] == [new["delivery_id"]]
    time.sleep(0.3)
    assert len(hooks_of(mock, old["delivery_id"])) == 1, "not redelivered"
    check_no_violations(mock)


def test_lose_queued_records_a_failed_attempt_posts_nothing_and_a_redelivery_arrives(mock: Mock) -> None:
    job = queue(mock, {"lose_queued": True})
    assert (job["status"], job["attempt_id"] > 0) == (502, True)
    assert hooks_of(mock, job["delivery_id"]) == [], "the webhook never saw it"
    [lost] = log_of(mock)
    assert (lost["guid"], lost["status"], lost["status_code"], lost["redelivery"]) == (
        job["delivery_id"],
        "Invalid HTTP Response: 502",
        502,
        False,
    )
    status, state = mock.call("GET", "/_mock/state")
    [sent] = state["webhooks_sent"]
    assert (sent["action"], sent["status"], sent["attempt_id"], sent["delivery_id"]) == (
        "queued",
        502,
        lost["id"],
        job["delivery_id"],
    )
    status, detail = mock.call("GET", f"{HOOKS}/{lost['id']}", None, mock.jwt())
    assert status == 200 and "502 Bad Gateway" in detail["response"]["payload"]
    queued = detail["request"]["payload"]
    assert queued["action"] == "queued" and str(queued["workflow_job"]["id"]) == str(job["job_id"])
    # GitHub never retries by itself
    time.sleep(0.3)
    assert len(log_of(mock)) == 1 and hooks_of(mock, job["delivery_id"]) == []
    # a redelivery (the REST API's) reaches the webhook: same guid, same payload
    assert mock.call("POST", f"{HOOKS}/{lost['id']}/attempts", None, mock.jwt())[0] == 202
    [arrived] = wait_until(lambda: hooks_of(mock, job["delivery_id"]), 10, "the redelivery")
    assert arrived["body"] == queued
    again = wait_until(lambda: len(log := log_of(mock)) == 2 and log[0], 10, "logged")
    assert (again["guid"], again["redelivery"], again["status_code"], again["status"]) == (
        job["delivery_id"],
        True,
        200,
        "OK",
    )
    assert again["id"] > lost["id"]
    check_no_violations(mock)


def test_lose_queued_is_redelivered_by_the_control_api_too_and_only_the_first_delivery_is_lost(mock: Mock) -> None:
    job = queue(mock, {"lose_queued": True})
    status, again = mock.call("POST", "/_mock/redeliver", {"delivery_id": job["delivery_id"]})
    assert (status, again["status"], again["delivery_id"]) == (200, 200, job["delivery_id"])
    [arrived] = hooks_of(mock, job["delivery_id"])
    assert arrived["body"] == json.loads(mock.world.deliveries[job["delivery_id"]]["body"])
    status, fresh = mock.call("POST", f"/_mock/jobs/{job['job_id']}/queue-again", {})
    assert (status, fresh["status"]) == (200, 200), "a new delivery of the job is not lost"
    assert [(d["redelivery"], d["status_code"]) for d in log_of(mock)] == [(False, 200), (True, 200), (False, 502)]


def test_an_unreachable_webhook_is_logged_as_failed_to_connect_with_status_code_0(mock: Mock) -> None:
    mock.world.webhook_url = f"http://127.0.0.1:{free_port()}/hook"
    job = queue(mock)
    [item] = log_of(mock)
    assert (job["status"], item["status"], item["status_code"]) == (0, "failed to connect to network", 0)
    status, detail = mock.call("GET", f"{HOOKS}/{item['id']}", None, mock.jwt())
    assert status == 200 and detail["response"] == {"headers": None, "payload": None}
    # a status_code of 0 is neither success (200-399) nor failure (400-599) to the status filter
    assert mock.call("GET", f"{HOOKS}?status=failure", None, mock.jwt())[1] == []
    check_no_violations(mock)


# ---- 2e. GitHub's rate limits and faults ------------------------------------------------------------------
RUNNERS = "/repos/octo-org/app/actions/runners"


def test_every_answer_carries_the_rate_limit_of_whoever_asked_and_spends_it(mock: Mock) -> None:
    token, other = mock.token(), mock.token()
    _, _, h1 = mock.call_h("GET", RUNNERS, None, token)
    _, _, h2 = mock.call_h("GET", RUNNERS, None, other)
    assert (h1["x-ratelimit-limit"], h1["x-ratelimit-resource"]) == ("5000", "core")
    assert (h1["x-ratelimit-remaining"], h1["x-ratelimit-used"]) == ("4999", "1")
    # the installation's budget, shared by its tokens
    assert (h2["x-ratelimit-remaining"], h2["x-ratelimit-used"]) == ("4998", "2")
    assert h1["x-ratelimit-reset"] == h2["x-ratelimit-reset"]
    assert time.time() < int(h1["x-ratelimit-reset"]) <= time.time() + 3600
    # the App's JWT has its own; no credentials: the IP's 60 an hour
    _, _, hj = mock.call_h("GET", HOOKS, None, mock.jwt())
    assert (hj["x-ratelimit-remaining"], hj["x-ratelimit-used"]) == ("4999", "1")
    _, _, hu = mock.call_h("GET", RUNNERS)
    assert (hu["x-ratelimit-limit"], hu["x-ratelimit-remaining"]) == ("60", "59")
    status, state = mock.call("GET", "/_mock/state")
    budgets = state["rate_limit"]
    assert budgets["installation:23154469"]["remaining"] == 4998
    assert budgets[f"app:{APP_ID}"]["used"] == 1 and budgets["ip:127.0.0.1"]["limit"] == 60
    # a spent budget: 403, GitHub's message, remaining 0
    with mock.world.lock:
        mock.world.rate_limits["installation:23154469"]["used"] = 5000
    status, answer, h = mock.call_h("GET", RUNNERS, None, token)
    assert status == 403 and answer["message"].startswith("API rate limit exceeded for installation ID 23154469.")
    assert h["x-ratelimit-remaining"] == "0"
    check_no_violations(mock)


@pytest.mark.parametrize(
    "rule, status, message, headers",
    [
        ({"kind": "server_error"}, 502, "Server Error", {}),
        ({"kind": "server_error", "status": 503}, 503, "Server Error", {}),
        (
            {"kind": "secondary_rate_limit", "status": 429, "retry_after": 7},
            429,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            {"retry-after": "7"},
        ),
        (
            {"kind": "secondary_rate_limit"},
            403,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            {"retry-after": "60"},
        ),
        (
            {"kind": "primary_rate_limit", "retry_after": 600},
            403,
            "API rate limit exceeded for installation ID 23154469.",
            {"x-ratelimit-remaining": "0", "x-ratelimit-limit": "5000"},
        ),
    ],
)
def test_a_github_fault_answers_once_then_the_route_works_again(
    mock: Mock, rule: dict[str, Any], status: int, message: str, headers: dict[str, str]
) -> None:
    status_, created = mock.call("POST", "/_mock/github-faults", {**rule, "route": "list_runners_repo"})
    assert status_ == 201 and created["matched"] == 0
    token = mock.token()
    # another route is not touched
    assert mock.call("GET", f"{RUNNERS}/1", None, token)[0] == 404
    got, answer, h = mock.call_h("GET", RUNNERS, None, token)
    assert got == status and answer["message"].startswith(message), answer
    assert {k: h.get(k) for k in headers} == headers
    if rule["kind"] == "primary_rate_limit":
        assert abs(int(h["x-ratelimit-reset"]) - (time.time() + 600)) < 5
    if rule["kind"] == "secondary_rate_limit":
        assert "x-ratelimit-remaining" not in h and mock.call_h("GET", RUNNERS, None, token)[0] == 200
    else:
        assert mock.call("GET", RUNNERS, None, token)[0] == 200
    [listed] = mock.call("GET", "/_mock/github-faults")[1]["rules"]
    assert (listed["id"], listed["matched"], listed["times"]) == (created["id"], 1, 1)
    check_no_violations(mock)


def test_github_faults_come_after_credentials_and_count_down_their_times(mock: Mock) -> None:
    assert mock.call("POST", "/_mock/github-faults", {"kind": "server_error", "times": 2})[0] == 201
    assert mock.call("GET", RUNNERS)[0] == 401, "no credentials: 401 first, the rule is not spent"
    assert mock.call("POST", "/app/installations/23154469/access_tokens", {}, mock.jwt())[0] == 502
    assert mock.call("GET", f"{HOOKS}", None, mock.jwt())[0] == 502
    assert mock.call("GET", HOOKS, None, mock.jwt())[0] == 200
    status, cleared = mock.call("DELETE", "/_mock/github-faults")
    assert (status, cleared) == (200, {"cleared": 1})
    for bad in (
        {"kind": "outage"},
        {"kind": "server_error", "status": 418},
        {"kind": "primary_rate_limit", "status": 502},
        {"kind": "server_error", "route": "no_such_route"},
        {"kind": "server_error", "times": 0},
        {"kind": "server_error", "retry_after": "soon"},
        {"kind": "server_error", "job_id": "1"},
    ):
        assert mock.call("POST", "/_mock/github-faults", bad)[0] == 422, bad
    check_no_violations(mock)


def test_every_fault_on_every_route_tasuki_calls_passes_githubs_description(mock: Mock) -> None:
    token = mock.token()
    calls = [
        ("access_tokens", "POST", "/app/installations/23154469/access_tokens", {}, mock.jwt()),
        ("jit_repo", "POST", JIT_PATH, GOOD_JIT, token),
        ("jit_org", "POST", "/orgs/octo-org/actions/runners/generate-jitconfig", GOOD_JIT, token),
        ("list_runners_repo", "GET", RUNNERS, None, token),
        ("get_runner_repo", "GET", f"{RUNNERS}/1", None, token),
        ("delete_runner_repo", "DELETE", f"{RUNNERS}/1", None, token),
        ("get_job", "GET", "/repos/octo-org/app/actions/jobs/1", None, token),
        ("list_hook_deliveries", "GET", HOOKS, None, mock.jwt()),
        ("redeliver_hook_delivery", "POST", f"{HOOKS}/1/attempts", None, mock.jwt()),
    ]
    for kind, statuses in (
        ("server_error", (500, 502, 503, 504)),
        ("secondary_rate_limit", (403, 429)),
        ("primary_rate_limit", (403, 429)),
    ):
        for status in statuses:
            for route, method, path, body, auth in calls:
                assert (
                    mock.call("POST", "/_mock/github-faults", {"kind": kind, "route": route, "status": status})[0]
                    == 201
                )
                assert mock.call(method, path, body, auth)[0] == status, (kind, route, status)
    check_no_violations(mock)


# ---- 3. the simulated runner exits like tasuki-boot ---------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TASK_ROLE = "arn:aws:iam::123456789012:role/tasuki-runner-task"


@pytest.fixture(scope="module")
def aws() -> Iterator[dict[str, Any]]:
    from moto.server import ThreadedMotoServer

    from harness.setup_aws import client, moto_api

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        moto_api(
            port,
            "/moto-api/state-manager/set-transition",
            {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1_000_000_000}},
        )
        ec2 = client("ec2", port)
        vpc = ec2.create_vpc(CidrBlock="10.43.0.0/16")["Vpc"]["VpcId"]
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.43.1.0/24", AvailabilityZone="us-east-1a")["Subnet"][
            "SubnetId"
        ]
        sg = ec2.create_security_group(GroupName="tasuki-strict", Description="test", VpcId=vpc)["GroupId"]
        ecs = client("ecs", port)
        from harness.common import CLUSTER_NAME, CONTAINER_NAME

        ecs.create_cluster(clusterName=CLUSTER_NAME, capacityProviders=["FARGATE", "FARGATE_SPOT"])
        td = ecs.register_task_definition(
            family="tasuki-runner-x64",
            networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"],
            cpu="2048",
            memory="4096",
            taskRoleArn=TASK_ROLE,
            containerDefinitions=[{"name": CONTAINER_NAME, "image": "runner", "essential": True, "memory": 4096}],
        )["taskDefinition"]["taskDefinitionArn"]
        kms = client("kms", port)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName="alias/tasuki-runner", TargetKeyId=key)
        yield {"port": port, "ecs": ecs, "kms": kms, "key": key, "td": td, "subnet": subnet, "sg": sg}
    finally:
        server.stop()


@pytest.fixture()
def sim(aws: dict[str, Any]) -> Iterator[Mock]:
    from harness.runner_sim import RunnerSimulator

    m, servers = start_mock(aws["port"])
    s = RunnerSimulator(m.world, aws["port"], m.recorder.server_address[1])
    s.start()
    yield m
    s.stop()
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def seal(kms: Any, job_id: str, encoded: str) -> str:
    from harness.runner_sim import seal_jit_config

    return seal_jit_config(kms, job_id, encoded)


def launch(
    m: Mock,
    aws: dict[str, Any],
    behaviour: dict[str, Any] | None = None,
    grant: bool = True,
    env_override: dict[str, str] | None = None,
    capacity_provider: str | None = None,
) -> tuple[str, str]:
    """What issue-token + run-task do for one job: returns (job id, task ARN). `capacity_provider`:
    what the gateway would have noted for a RunTask with that strategy."""
    from harness.common import CLUSTER_NAME, CONTAINER_NAME

    status, job = m.call("POST", "/_mock/jobs", {"labels": ["self-hosted", "tasuki"], "behaviour": behaviour or {}})
    assert status == 200
    job_id = str(job["job_id"])
    name = f"tasuki-{job_id}-1"
    status, created = m.call("POST", JIT_PATH, {"name": name, "runner_group_id": 1, "labels": ["tasuki"]}, m.token())
    assert status == 201
    if grant:
        from harness.runner_sim import grant_for_job

        grant_for_job(aws["kms"], "alias/tasuki-runner", TASK_ROLE, job_id)
    env = {
        "TASUKI_JOB_ID": job_id,
        "TASUKI_ATTEMPT": "1",
        "TASUKI_RUNNER_NAME": name,
        "TASUKI_JIT_CONFIG_SEALED": seal(aws["kms"], job_id, created["encoded_jit_config"]),
        "TASUKI_KMS_KEY_ID": "alias/tasuki-runner",
        **(env_override or {}),
    }
    task = aws["ecs"].run_task(
        cluster=CLUSTER_NAME,
        taskDefinition=aws["td"],
        launchType="FARGATE",
        startedBy=f"tasuki/{job_id}/1",
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": [aws["subnet"]],
                "securityGroups": [aws["sg"]],
                "assignPublicIp": "DISABLED",
            }
        },
        overrides={
            "containerOverrides": [
                {"name": CONTAINER_NAME, "environment": [{"name": k, "value": v} for k, v in env.items()]}
            ]
        },
    )["tasks"][0]
    if capacity_provider:
        m.world.ledger.note_task(task["taskArn"], capacityProviderName=capacity_provider)
    return job_id, task["taskArn"]


def stopped_event(m: Mock, task_arn: str, seconds: float = 20) -> dict[str, Any]:
    return wait_until(
        lambda: next((e["detail"] for e in m.events() if e["detail"]["taskArn"] == task_arn), None),
        seconds,
        f"the ECS event of {task_arn}",
    )


def actions(m: Mock, job_id: str) -> list[str]:
    return [h["body"]["action"] for h in m.hooks() if str(h["body"]["workflow_job"]["id"]) == job_id]


def runner_events(m: Mock, task_arn: str) -> list[dict[str, Any]]:
    with m.world.lock:
        return [e for e in m.world.runner_events if e["task_arn"] == task_arn]


def test_a_runner_that_ran_its_job_exits_0_from_the_sealed_config(sim: Mock, aws: dict[str, Any]) -> None:
    job, arn = launch(sim, aws)
    detail = stopped_event(sim, arn)
    assert detail["stopCode"] == "EssentialContainerExited" and detail["containers"][0]["exitCode"] == 0
    assert actions(sim, job) == ["queued", "in_progress", "completed"]
    check_no_violations(sim)


def test_a_deprecated_runner_version_exits_81_without_registering(sim: Mock, aws: dict[str, Any]) -> None:
    job, arn = launch(sim, aws, {"version_deprecated": [1]})
    detail = stopped_event(sim, arn)
    assert detail["stopCode"] == "EssentialContainerExited" and detail["containers"][0]["exitCode"] == 81
    assert actions(sim, job) == ["queued"]
    assert [e["event"] for e in runner_events(sim, arn)] == ["booted", "version-deprecated"]
    runner = sim.world.runner_by_name(f"tasuki-{job}-1")
    assert runner is not None
    assert runner["status"] == "offline" and not runner["busy"]


def test_a_spot_interruption_gives_the_job_the_grace_then_exits_82(sim: Mock, aws: dict[str, Any]) -> None:
    job, arn = launch(sim, aws, {"spot_interruption": [1], "stop_grace_seconds": 1.5}, capacity_provider="FARGATE_SPOT")
    # From the warning on, DescribeTasks says why the running task will stop.
    from harness.common import CLUSTER_NAME

    def stopping() -> dict[str, Any] | None:
        [task] = aws["ecs"].describe_tasks(cluster=CLUSTER_NAME, tasks=[arn])["tasks"]
        sim.world.ledger.patch_task(task)
        return task if task.get("stopCode") == "SpotInterruption" and task["lastStatus"] != "STOPPED" else None

    warned = wait_until(stopping, 10, "the Spot warning")
    assert warned["desiredStatus"] == "STOPPED"
    detail = stopped_event(sim, arn)
    assert detail["stopCode"] == "SpotInterruption" and detail["containers"][0]["exitCode"] == 82
    events = {e["event"]: e for e in runner_events(sim, arn)}
    assert events["spot-interrupted"]["grace_seconds"] == 1.5
    assert events["grace-expired"]["at"] - events["spot-interrupted"]["at"] >= 1.4
    wait_until(lambda: actions(sim, job) == ["queued", "in_progress", "completed"], 10, "completed")
    completed = [
        h for h in sim.hooks() if h["body"]["action"] == "completed" and str(h["body"]["workflow_job"]["id"]) == job
    ]
    assert completed[0]["body"]["workflow_job"]["conclusion"] == "failure"


def test_on_demand_capacity_is_never_spot_interrupted(sim: Mock, aws: dict[str, Any]) -> None:
    job, arn = launch(sim, aws, {"spot_interruption": [1], "stop_grace_seconds": 0.2}, capacity_provider="FARGATE")
    wait_until(lambda: actions(sim, job) == ["queued", "in_progress", "completed"], 15, "completed")
    assert "spot-interrupted" not in [e["event"] for e in runner_events(sim, arn)]
    completed = [
        h for h in sim.hooks() if h["body"]["action"] == "completed" and str(h["body"]["workflow_job"]["id"]) == job
    ]
    assert completed[0]["body"]["workflow_job"]["conclusion"] == "success"


def test_a_runner_stopped_before_any_job_exits_83(sim: Mock, aws: dict[str, Any]) -> None:
    from harness.common import CLUSTER_NAME

    job, arn = launch(sim, aws, {"never_register": [1]})
    wait_until(lambda: any(e["event"] == "never-registers" for e in runner_events(sim, arn)), 10, "boot")
    aws["ecs"].stop_task(cluster=CLUSTER_NAME, task=arn, reason="cleanup")
    detail = stopped_event(sim, arn)
    assert detail["stopCode"] == "UserInitiated" and detail["containers"][0]["exitCode"] == 83


def test_boot_failures_exit_with_tasuki_boots_codes(
    sim: Mock, aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASUKI_LOCAL_GRANT_WAIT_SECONDS", "0.5")
    # no grant for the task role: KMS refuses (tasuki-boot retries, then exits 69)
    _, arn = launch(sim, aws, grant=False)
    assert stopped_event(sim, arn)["containers"][0]["exitCode"] == 69
    assert "no live grant" in runner_events(sim, arn)[0]["reason"]
    # the old variable is not read any more: no sealed config (78)
    _, arn = launch(sim, aws, env_override={"TASUKI_JIT_CONFIG_SEALED": ""})
    assert stopped_event(sim, arn)["containers"][0]["exitCode"] == 78
    # a config sealed for another job does not open (77)
    other, _ = launch(sim, aws, {"never_register": [1]})
    stolen = seal(aws["kms"], other, "e30=")
    _, arn = launch(sim, aws, env_override={"TASUKI_JIT_CONFIG_SEALED": stolen})
    assert stopped_event(sim, arn)["containers"][0]["exitCode"] == 77
    # every status the simulator produced is one tasuki-boot produces
    from harness.runner_sim import BOOT_EXIT_CODES

    codes = {e["detail"]["containers"][0].get("exitCode") for e in sim.events()}
    assert codes - {None} <= BOOT_EXIT_CODES, codes


def sent_for(m: Mock, job: str) -> list[tuple[str, int, bool]]:
    with m.world.lock:
        return [(w["action"], w["status"], w["redelivery"]) for w in m.world.webhooks_sent if str(w["job_id"]) == job]


@pytest.mark.parametrize("lost", ["in_progress", "completed"])
def test_a_lost_in_progress_or_completed_delivery_is_a_failed_attempt_the_webhook_never_saw(
    sim: Mock, aws: dict[str, Any], lost: str
) -> None:
    job, arn = launch(sim, aws, {f"lose_{lost}": True})
    stopped_event(sim, arn)
    wait_until(lambda: len(sent_for(sim, job)) == 3, 10, "three deliveries")
    assert sent_for(sim, job) == [
        ("queued", 200, False),
        ("in_progress", 502 if lost == "in_progress" else 200, False),
        ("completed", 502 if lost == "completed" else 200, False),
    ]
    assert actions(sim, job) == [a for a in ("queued", "in_progress", "completed") if a != lost]
    [failed] = [d for d in log_of(sim) if d["status_code"] == 502]
    assert (failed["action"], failed["status"]) == (lost, "Invalid HTTP Response: 502")
    time.sleep(0.3)
    assert len(sent_for(sim, job)) == 3, "GitHub does not retry by itself"
    check_no_violations(sim)


def test_the_spec_files_load_fast_enough_to_start_with_the_mock() -> None:
    started = time.monotonic()
    rest = openapi_check.RestSpec()
    openapi_check.WebhookSpec()
    assert time.monotonic() - started < 10
    op, params, known = rest.match("POST", JIT_PATH)
    assert known and op is not None and op.operation_id == "actions/generate-runner-jitconfig-for-repo"
    assert params == {"owner": "octo-org", "repo": "app"}
    assert rest.version and APP_ID


# ---- 2e. workflow runs and re-runs (actions/get-workflow-run, actions/re-run-job-for-workflow-run) -------
def finish(m: Mock, job_id: str, conclusion: str) -> None:
    with m.world.lock:
        m.world.jobs[job_id].update(status="completed", conclusion=conclusion)


def test_a_run_is_completed_only_when_every_job_of_its_latest_attempt_is(mock: Mock) -> None:
    job = queue(mock)["job_id"]
    run = mock.world.jobs[job]["run_id"]
    status, body = mock.call("GET", f"/repos/octo-org/app/actions/runs/{run}", None, mock.token())
    assert (status, body["status"], body["conclusion"], body["id"]) == (200, "queued", None, run)
    finish(mock, job, "failure")
    status, body = mock.call("GET", f"/repos/octo-org/app/actions/runs/{run}", None, mock.token())
    assert (body["status"], body["conclusion"]) == ("completed", "failure")
    assert mock.call("GET", f"/repos/octo-org/app/actions/runs/{run + 999}", None, mock.token())[0] == 404
    assert mock.call("GET", f"/repos/octo-org/other/actions/runs/{run}", None, mock.token())[0] == 404
    check_no_violations(mock)


def test_a_job_is_rerun_once_its_run_completed_with_actions_write_as_a_new_job_of_the_runs_next_attempt(
    mock: Mock,
) -> None:
    job = queue(mock, {"spot_interruption": [1]})["job_id"]
    rerun = f"/repos/octo-org/app/actions/jobs/{job}/rerun"
    status, body = mock.call("POST", rerun, None, mock.token())
    assert (status, body["message"]) == (403, "This workflow run is not completed")
    finish(mock, job, "failure")
    read_only = mock.world.issue_token(23154469, {"actions": "read", "metadata": "read"})["token"]
    status, body = mock.call("POST", rerun, None, {"Authorization": f"Bearer {read_only}"})
    assert (status, body["message"]) == (403, "Resource not accessible by integration")
    assert mock.call("POST", rerun, None, mock.token()) == (201, {})
    old = mock.world.jobs[job]

    def rerun_job() -> dict[str, Any] | None:
        with mock.world.lock:
            found = [j for j in mock.world.jobs.values() if j["run_id"] == old["run_id"] and j["job_id"] != job]
        return found[0] if found else None

    new = wait_until(rerun_job, 5, "the re-run job")
    assert (new["run_attempt"], new["labels"], new["behaviour"]) == (2, old["labels"], old["behaviour"])
    queued = wait_until(
        lambda: [h for h in mock.hooks() if h["body"]["workflow_job"]["id"] == int(new["job_id"])],
        5,
        "the re-run's queued delivery",
    )
    assert queued[0]["body"]["workflow_job"]["run_attempt"] == 2
    # The run is no longer completed: its latest attempt has a queued job.
    status, body = mock.call("POST", rerun, None, mock.token())
    assert status == 403
    check_no_violations(mock)
