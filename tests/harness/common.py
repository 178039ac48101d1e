"""Shared constants and small helpers of the local stack (no third-party imports here)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = REPO_ROOT / ".tasuki"
LOG_DIR = STATE_DIR / "logs"
PID_FILE = STATE_DIR / "local-stack.pid"
READY_FILE = STATE_DIR / "local-stack.ready.json"
FAILED_FILE = STATE_DIR / "local-stack.failed"
LOCAL_ENV_FILE = STATE_DIR / "local.env"
LOCAL_CONFIG_FILE = STATE_DIR / "local.config.json"
# The local deploy config as synthesized (knobs written in), the cloud assembly, and what each of
# the template's logical ids became in moto (for tests that re-resolve the template).
LOCAL_DEPLOY_CONFIG_FILE = STATE_DIR / "local.deploy.config.json"
SYNTH_DIR = STATE_DIR / "cdk.out"
LOCAL_RESOURCES_FILE = STATE_DIR / "local.resources.json"
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures" / "webhooks"
DEFAULT_ASL_FILE = REPO_ROOT / "statemachines" / "runner-job.asl.json"

# Every process the local stack starts carries this variable (value: the state directory), so
# `down` can find and end exactly those processes, even re-parented ones, and nothing else.
MARKER_ENV = "TASUKI_LOCAL_STACK_MARKER"

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
DUMMY_ACCESS_KEY = "testing"
DUMMY_SECRET_KEY = "testing"

TABLE_NAME = "tasuki-jobs"
STATE_MACHINE_NAME = "tasuki-runner-job"
CLUSTER_NAME = "tasuki-local"
CONTAINER_NAME = "runner"
KMS_ALIAS = "alias/tasuki-runner"
WEBHOOK_SECRET_NAME = "tasuki/webhook-secret"
PRIVATE_KEY_SECRET_NAME = "tasuki/github-app-private-key"
APP_ID = 424242
RUNNER_GROUP_ID = 1
TASK_DEFINITIONS = {
    "x64": "tasuki-runner-x64",
    "arm64": "tasuki-runner-arm64",
    "x64_docker": "tasuki-runner-x64-docker",
    "arm64_docker": "tasuki-runner-arm64-docker",
}
EC2_CAPACITY_PROVIDERS = {"x64": "tasuki-ec2-x64", "arm64": "tasuki-ec2-arm64"}

# Lambda bins (docs/contracts.md). The ones with an ASL placeholder are invoked by Step Functions.
LAMBDA_BINS = [
    "webhook",
    "validate",
    "resolve-labels",
    "issue-token",
    "run-task",
    "wait-for-registration",
    "confirm",
    "cleanup",
    "finalize",
    "ecs-events",
    "rescue",
]
# The others: the webhook's Function URL and the EventBridge targets (task stops, the rescue schedule).
NOT_ASL_BINS = ("webhook", "ecs-events", "rescue")
ASL_BINS = [b for b in LAMBDA_BINS if b not in NOT_ASL_BINS]

DEFAULT_PORT_BASE = 47110


def placeholder_for(bin_name: str) -> str:
    """`resolve-labels` -> `ResolveLabelsFunctionArn` (contracts.md substitution rule)."""
    return "".join(part[:1].upper() + part[1:] for part in bin_name.split("-")) + "FunctionArn"


def lambda_arn(bin_name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{bin_name}"


PLACEHOLDER_RE = re.compile(r"\$\{([^}]*)\}")


def substitute_asl(text: str) -> str:
    """Replace every `${XxxFunctionArn}` by the local Lambda ARN; unknown placeholders are an error."""
    known = {placeholder_for(b): lambda_arn(b) for b in ASL_BINS}
    unknown = sorted({m.group(1) for m in PLACEHOLDER_RE.finditer(text) if m.group(1) not in known})
    if unknown:
        raise ValueError(
            "unknown placeholder(s) in the state machine definition: "
            + ", ".join(f"${{{u}}}" for u in unknown)
            + "; known: "
            + ", ".join(f"${{{k}}}" for k in sorted(known))
        )
    return PLACEHOLDER_RE.sub(lambda m: known[m.group(1)], text)


class Ports:
    def __init__(self, base: int):
        self.base = base
        self.moto = base
        self.gateway = base + 1
        self.lambdas = base + 2
        self.github = base + 3

    @classmethod
    def from_env(cls) -> Ports:
        raw = os.environ.get("TASUKI_LOCAL_PORT_BASE", "").strip()
        base = int(raw) if raw else DEFAULT_PORT_BASE
        if not 1024 <= base <= 65532:
            raise ValueError(f"TASUKI_LOCAL_PORT_BASE={base} is out of range (1024..65532)")
        return cls(base)

    def as_dict(self) -> dict[str, int]:
        return {"moto": self.moto, "gateway": self.gateway, "lambdas": self.lambdas, "github": self.github}


def port_is_free(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR like the servers we start: only a bound/listening socket makes this fail.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def port_accepts(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def read_env_file(path: Path = LOCAL_ENV_FILE) -> dict[str, str]:
    """Parse the `export KEY=VALUE` lines written by `local_stack.py up`."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        key, _, value = line.partition("=")
        parts = shlex.split(value) if value else [""]
        env[key.strip()] = parts[0] if parts else ""
    return env


def write_env_file(path: Path, values: dict[str, str]) -> None:
    lines = ["# Written by tests/harness/local_stack.py up; `source` it to talk to the local stack."]
    lines += [f"export {k}={shlex.quote(str(v))}" for k, v in values.items()]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def load_fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES_DIR / name).read_text())


def run_bounded(cmd: list[str], cwd: Path, out: Any, limit: float, env: dict[str, str] | None = None) -> int | None:
    """Runs `cmd` in its own process group with output to `out`; its exit status, or None when it
    did not finish within `limit` seconds (then the whole group is stopped: TERM, then KILL)."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        return proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        return None
