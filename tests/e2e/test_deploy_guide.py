"""The runtime reached exactly as deployed (issue 8, defects 1 and 2).

The local stack synthesizes infra/ with tests/harness/local.tasuki.config.json, creates the secrets
by running infra/README.md's own commands, and starts the Lambdas with the environment the template
gives them, resolved against the resources it created in moto. These tests check that the running
Lambdas really got that environment, and that a delivery signed with the secret a user pastes into
GitHub (step 6 of the guide) is accepted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from harness import client
from harness.common import LOCAL_RESOURCES_FILE, MARKER_ENV, READY_FILE, STATE_DIR
from harness.setup_aws import GUIDE_DIR, local_overrides
from harness.template import (
    Local,
    Resolver,
    Unresolvable,
    lambda_environment,
    load_template,
    pseudo_parameters,
    stack_name_of,
)

LABELS = ["self-hosted", "tasuki"]


def process_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode(errors="replace").split("=", 1) for item in raw.split(b"\0") if b"=" in item)


def lambda_processes() -> dict[int, tuple[str, dict[str, str]]]:
    """Processes the local stack started whose environment is a Lambda's (cargo lambda watch and
    the function processes it runs): pid -> (command line, environment)."""
    marker = f"{MARKER_ENV}={STATE_DIR.resolve()}"
    found: dict[int, tuple[str, dict[str, str]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            env = process_env(pid)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker.split("=", 1)[1] == env.get(MARKER_ENV) and "TASUKI_CONFIG" in env:
            found[pid] = (cmdline, env)
    return found


def resolve_again() -> tuple[dict[str, str], dict[str, Any]]:
    """The template in .tasuki/cdk.out resolved afresh against what each logical id became in moto."""
    recorded = json.loads(LOCAL_RESOURCES_FILE.read_text())
    cdk_out = Path(recorded["cdk_out"])
    template = load_template(cdk_out)
    known = {lid: Local(v["ref"], v["attrs"]) for lid, v in recorded["locals"].items()}

    def provider(lid: str, res: dict[str, Any]) -> Local:
        if lid not in known:
            raise Unresolvable(f"{lid} ({res.get('Type')}) was not created by the local stack")
        return known[lid]

    resolver = Resolver(template, provider, pseudo_parameters(stack_name_of(cdk_out)), recorded["azs"])
    return lambda_environment(template, resolver), recorded


def test_the_lambdas_run_with_the_templates_environment_resolved():
    expected, recorded = resolve_again()
    assert expected == recorded["template_env"]
    want = local_overrides(expected, client.env()["TASUKI_GITHUB_URL"])
    want_config = json.loads(want["TASUKI_CONFIG"])
    # The only local change: GitHub's API URL (the deploy config takes only https://).
    template_config = json.loads(expected["TASUKI_CONFIG"])
    assert {**template_config, "github": {**template_config["github"], "api_url": None}} == {
        **want_config,
        "github": {**want_config["github"], "api_url": None},
    }

    procs = lambda_processes()
    ready = json.loads(READY_FILE.read_text())
    assert ready["lambdas_pid"] in procs, "cargo lambda watch does not carry the template's TASUKI_CONFIG"
    # The webhook answered the readiness probe, so its function process runs.
    assert any("webhook" in cmd for cmd, _ in procs.values() if cmd != procs[ready["lambdas_pid"]][0]), (
        f"no webhook function process among {[c for c, _ in procs.values()]}"
    )
    for pid, (cmd, env) in procs.items():
        assert json.loads(env["TASUKI_CONFIG"]) == want_config, f"{pid} {cmd}"
        for name, value in want.items():
            assert env.get(name) == value, f"{pid} {cmd}: {name}"
        assert "TASUKI_CONFIG_FILE" not in env, f"{pid} {cmd} could read another config"


def test_a_delivery_signed_with_the_secret_pasted_into_github_is_accepted(job_ids):
    # Step 1 of infra/README.md: `openssl rand -hex 32 > webhook-secret.txt` (a trailing newline);
    # step 2 stores the file with `file://`; step 6 pastes its content into GitHub's form.
    [secret_file] = list(GUIDE_DIR.glob("*secret*.txt"))
    content = secret_file.read_text()
    pasted = content.strip()
    assert len(pasted) == 64
    assert client.env()["TASUKI_WEBHOOK_SECRET"] == pasted
    assert pasted in client.secrets_for_leak_check(), "the GitHub mock signs with what the user pasted"

    answer = client.queue_job_full(LABELS)
    job = str(answer["job_id"])
    job_ids.append(job)
    assert answer["status"] == 202, answer
    # IssueToken reads the App key by the id the template gives it (the guide's secret name), signs
    # an App JWT the GitHub mock verifies, and gets the job's JIT config. (That the job then runs to
    # completion is tests/e2e/test_lifecycle.py's business.)
    runners = client.wait_until(
        lambda: [r for r in client.mock_state()["runners"] if r["name"].startswith(f"tasuki-{job}-")],
        timeout=60,
        what=f"a JIT runner for job {job}",
    )
    assert len(runners) == 1
