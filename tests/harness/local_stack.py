#!/usr/bin/env python3
"""Local stack for tasuki: moto + gateway + cargo lambda watch + GitHub mock + simulated runners.

    .tasuki/venv/bin/python tests/harness/local_stack.py up       # start in the background, wait until ready
    .tasuki/venv/bin/python tests/harness/local_stack.py status   # is it up? (exit 0 if ready)
    .tasuki/venv/bin/python tests/harness/local_stack.py down     # stop everything it started

Ports: TASUKI_LOCAL_PORT_BASE (default 47110): moto = base, gateway = base+1,
cargo lambda watch = base+2, GitHub mock = base+3. Everything binds to 127.0.0.1.
Writes .tasuki/local.env (source it) and .tasuki/local.config.json. Logs: .tasuki/logs/.

`up` synthesizes the CDK app (infra/) offline with tests/harness/local.tasuki.config.json into
.tasuki/cdk.out (skipped when its inputs are unchanged); the daemon creates in moto what the
template's Lambda environment and state machine refer to, runs the deploy guide's secret commands,
and starts the Lambdas with the template's environment, resolved (see tests/harness/README.md).

Other knobs (env): TASUKI_LOCAL_READY_SECONDS (240), TASUKI_LOCAL_BUILD_SECONDS (1800),
TASUKI_LOCAL_ASL_FILE (state machine definition, default statemachines/runner-job.asl.json),
TASUKI_LOCAL_REGISTRATION_SECONDS (8) and TASUKI_LOCAL_CAPACITY_WAIT_SECONDS (10): written into
the local deploy config before synth; TASUKI_LOCAL_SYNTH_SECONDS (600), TASUKI_LOCAL_LAMBDA_DIR
(cargo workspace of the Lambdas, default the repo root), TASUKI_LOCAL_LAMBDA_PACKAGE (tasuki-lambdas;
empty: build the whole workspace), TASUKI_LOCAL_SKIP_BUILD=1, TASUKI_LOCAL_WATCH_RELOAD=1 (let cargo
lambda watch rebuild on source changes; off by default, see README in this folder).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.common import (  # noqa: E402
    DUMMY_ACCESS_KEY,
    DUMMY_SECRET_KEY,
    FAILED_FILE,
    LOCAL_CONFIG_FILE,
    LOCAL_DEPLOY_CONFIG_FILE,
    LOCAL_ENV_FILE,
    LOCAL_RESOURCES_FILE,
    LOG_DIR,
    MARKER_ENV,
    PID_FILE,
    READY_FILE,
    REGION,
    REPO_ROOT,
    STATE_DIR,
    SYNTH_DIR,
    Ports,
    port_accepts,
    port_is_free,
    run_bounded,
    write_env_file,
    write_json,
)

log = logging.getLogger("local-stack")


def say(msg: str) -> None:
    print(f"local-stack: {msg}", file=sys.stderr, flush=True)


def env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def lambda_dir() -> Path:
    raw = os.environ.get("TASUKI_LOCAL_LAMBDA_DIR", "").strip()
    return Path(raw).resolve() if raw else REPO_ROOT


def lambda_package() -> str | None:
    if "TASUKI_LOCAL_LAMBDA_PACKAGE" in os.environ:
        return os.environ["TASUKI_LOCAL_LAMBDA_PACKAGE"].strip() or None
    return "tasuki-lambdas"


def venv_tool(name: str) -> str:
    """A console script of the interpreter running us (the venv), else from PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"local-stack: {name} not found (run scripts/bootstrap.sh and use .tasuki/venv/bin/python)")
    return found


# ---------------------------------------------------------------------------------------------------
# process bookkeeping (only processes carrying our marker are ever signalled)
# ---------------------------------------------------------------------------------------------------
def marker_value() -> str:
    return str(STATE_DIR.resolve())


def proc_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def proc_has_marker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return False
    return f"{MARKER_ENV}={marker_value()}".encode() in env


def marked_pids() -> list[int]:
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            pid = int(entry)
            if pid != me and proc_alive(pid) and proc_has_marker(pid):
                out.append(pid)
    return sorted(out)


def signal_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            pass


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    left = [p for p in pids if proc_alive(p)]
    for _ in range(int(seconds / 0.1) + 1):
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
        left = [p for p in left if proc_alive(p)]
    return left


def read_pid() -> int | None:
    try:
        return int(PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return None


def daemon_running() -> int | None:
    pid = read_pid()
    if pid and proc_alive(pid) and proc_has_marker(pid):
        return pid
    return None


# ---------------------------------------------------------------------------------------------------
# down
# ---------------------------------------------------------------------------------------------------
def cmd_down(quiet: bool = False) -> int:
    pid = daemon_running()
    if pid:
        if not quiet:
            say(f"stopping daemon {pid}")
        signal_pids([pid], signal.SIGTERM)
        if wait_gone([pid], 30):
            say(f"daemon {pid} did not stop within 30 s; killing")
    # Whatever is left that we started (children the daemon could not stop, orphans of an earlier
    # crash): SIGTERM, bounded wait, SIGKILL.
    left = marked_pids()
    if left:
        if not quiet:
            say(f"terminating leftover processes {left}")
        signal_pids(left, signal.SIGTERM)
        left = wait_gone(left, 10)
        if left:
            say(f"killing {left}")
            signal_pids(left, signal.SIGKILL)
            left = wait_gone(left, 5)
    for f in (PID_FILE, READY_FILE, LOCAL_ENV_FILE):  # a stale local.env would point at nothing
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
    if left:
        say(f"error: processes still alive after SIGKILL: {left}")
        return 1
    if not quiet:
        say("down")
    return 0


# ---------------------------------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------------------------------
def cmd_status() -> int:
    pid = daemon_running()
    if not pid:
        say("not running")
        return 3
    if not READY_FILE.exists():
        say(f"daemon {pid} is starting (not ready yet)")
        return 2
    ready = json.loads(READY_FILE.read_text())
    ports = ready["ports"]
    problems = []
    for name, port in ports.items():
        if not port_accepts(port):
            problems.append(f"{name} port {port} not accepting")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['github']}/_mock/health", timeout=5) as r:
            health = json.loads(r.read())
        problems += health.get("problems") or []
    except (OSError, ValueError) as exc:
        problems.append(f"daemon health check failed: {exc}")
    print(json.dumps({"pid": pid, "ready": not problems, "problems": problems, **ready}, indent=2))
    return 0 if not problems else 1


# ---------------------------------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------------------------------
def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def cargo_build() -> None:
    if os.environ.get("TASUKI_LOCAL_SKIP_BUILD") == "1":
        say("skipping cargo build (TASUKI_LOCAL_SKIP_BUILD=1)")
        return
    cmd = ["cargo", "build", "--bins"]
    pkg = lambda_package()
    if pkg:
        cmd[2:2] = ["-p", pkg]
    limit = env_seconds("TASUKI_LOCAL_BUILD_SECONDS", 1800)
    log_file = LOG_DIR / "cargo-build.log"
    say(f"{' '.join(cmd)} in {lambda_dir()} (log: {log_file.relative_to(REPO_ROOT)}, limit {int(limit)} s)")
    started = time.monotonic()
    with open(log_file, "w") as out:
        rc = run_bounded(cmd, lambda_dir(), out, limit)
    if rc is None:
        raise SystemExit(f"local-stack: cargo build did not finish within {int(limit)} s\n{tail(log_file)}")
    if rc != 0:
        raise SystemExit(f"local-stack: cargo build failed (exit {rc})\n{tail(log_file)}")
    say(f"cargo build done in {time.monotonic() - started:.0f} s")


def local_deploy_config(ports: Ports) -> dict[str, Any]:
    """tests/harness/local.tasuki.config.json with the knobs written in (before synth)."""
    from harness.template import LOCAL_DEPLOY_CONFIG

    config = json.loads(LOCAL_DEPLOY_CONFIG.read_text())
    config.pop("$schema", None)
    timeouts = config.setdefault("timeouts", {})
    for knob, field in (
        ("TASUKI_LOCAL_REGISTRATION_SECONDS", "registration_seconds"),
        ("TASUKI_LOCAL_CAPACITY_WAIT_SECONDS", "capacity_wait_seconds"),
    ):
        raw = os.environ.get(knob, "").strip()
        if raw:
            timeouts[field] = int(raw)
    return config


def cdk_synth(ports: Ports) -> None:
    """`npx cdk synth -c lambdaCode=placeholder -c config=<local deploy config> -o .tasuki/cdk.out`."""
    from harness.template import synth

    write_json(LOCAL_DEPLOY_CONFIG_FILE, local_deploy_config(ports))
    if not shutil.which("npm") or not shutil.which("npx"):
        raise RuntimeError("npm/npx not found: install Node.js >= 20 (the local stack synthesizes infra/)")
    log_file = LOG_DIR / "synth.log"
    log_file.write_text("")
    limit = env_seconds("TASUKI_LOCAL_SYNTH_SECONDS", 600)
    say(
        f"cdk synth of infra/ into {SYNTH_DIR.relative_to(REPO_ROOT)} "
        f"(log: {log_file.relative_to(REPO_ROOT)}, limit {int(limit)} s)"
    )
    started = time.monotonic()
    if synth(LOCAL_DEPLOY_CONFIG_FILE, SYNTH_DIR, log_file, limit=limit):
        say(f"cdk synth done in {time.monotonic() - started:.0f} s")
    else:
        say("cdk synth skipped: infra/, statemachines/ and the local deploy config are unchanged")


def cmd_up() -> int:
    STATE_DIR.mkdir(exist_ok=True)
    LOG_DIR.mkdir(exist_ok=True)
    ports = Ports.from_env()
    pid = daemon_running()
    if pid:
        if READY_FILE.exists():
            ready = json.loads(READY_FILE.read_text())
            if ready.get("ports") == ports.as_dict():
                say(f"already up (daemon {pid}); `down` first to restart")
                return 0
        say(f"a local stack (daemon {pid}) is running but not ready or on other ports; stopping it")
        cmd_down(quiet=True)
    elif marked_pids():
        say("cleaning up leftovers of an earlier run")
        cmd_down(quiet=True)

    taken = [f"{name} port {port}" for name, port in ports.as_dict().items() if not port_is_free(port)]
    if taken:
        say(
            "error: port(s) already in use on 127.0.0.1: "
            + ", ".join(taken)
            + " (set TASUKI_LOCAL_PORT_BASE to use other ports)"
        )
        return 1
    # fail early on a missing or broken state machine definition override
    from harness.setup_aws import check_asl_override

    try:
        check_asl_override()
    except (OSError, ValueError) as exc:
        say(f"error: {exc}")
        return 1
    venv_tool("moto_server")
    venv_tool("cargo-lambda")
    if not shutil.which("cargo"):
        say("error: cargo not found in PATH")
        return 1

    for f in (READY_FILE, FAILED_FILE, LOCAL_ENV_FILE):
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
    try:
        cdk_synth(ports)
    except (OSError, ValueError, RuntimeError) as exc:
        say(f"error: {exc}")
        return 1
    cargo_build()

    env = dict(os.environ)
    env[MARKER_ENV] = marker_value()
    env["PYTHONUNBUFFERED"] = "1"
    daemon_log = LOG_DIR / "daemon.log"
    with open(daemon_log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "_daemon"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own session and process group: survives our exit
        )
    PID_FILE.write_text(f"{proc.pid}\n")
    limit = env_seconds("TASUKI_LOCAL_READY_SECONDS", 240)
    say(
        f"daemon {proc.pid} started; waiting up to {int(limit)} s for it to be ready "
        f"(log: {daemon_log.relative_to(REPO_ROOT)})"
    )
    try:
        return _wait_ready(proc, limit)
    except KeyboardInterrupt:
        say("interrupted; tearing down")
        cmd_down(quiet=True)
        return 130


def _wait_ready(proc: subprocess.Popen[bytes], limit: float) -> int:
    deadline = time.monotonic() + limit
    for _ in range(int(limit / 0.25) + 1):
        if READY_FILE.exists():
            ready = json.loads(READY_FILE.read_text())
            say(
                f"ready in {ready['startup_seconds']:.0f} s: gateway {ready['urls']['gateway']}, "
                f"webhook {ready['urls']['webhook']}, GitHub mock {ready['urls']['github']}"
            )
            for note in ready.get("notes") or []:
                say(f"note: {note}")
            say(f"env: source {LOCAL_ENV_FILE.relative_to(REPO_ROOT)}")
            return 0
        if FAILED_FILE.exists() or proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    why = (
        FAILED_FILE.read_text().strip()
        if FAILED_FILE.exists()
        else (
            f"daemon exited with {proc.returncode}" if proc.poll() is not None else f"not ready within {int(limit)} s"
        )
    )
    say(f"error: local stack failed to start: {why}")
    for name in ("daemon.log", "moto.log", "lambdas.log"):
        p = LOG_DIR / name
        if p.exists():
            print(f"----- {p.relative_to(REPO_ROOT)} (tail) -----\n{tail(p)}", file=sys.stderr)
    cmd_down(quiet=True)
    return 1


# ---------------------------------------------------------------------------------------------------
# the daemon
# ---------------------------------------------------------------------------------------------------
class Daemon:
    def __init__(self) -> None:
        self.ports = Ports.from_env()
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self.problems: list[str] = []

    def spawn(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path) -> None:
        with open(LOG_DIR / f"{name}.log", "w") as out:
            log.info("starting %s: %s", name, " ".join(cmd))
            self.children[name] = subprocess.Popen(
                cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    def check_children(self) -> None:
        for name, proc in self.children.items():
            if proc.poll() is not None:
                msg = f"{name} exited unexpectedly with {proc.returncode} (see .tasuki/logs/{name}.log)"
                if msg not in self.problems:
                    log.error(msg)
                    self.problems.append(msg)

    def wait_until(self, what: str, check: Any, seconds: float, interval: float = 0.25) -> None:
        deadline = time.monotonic() + seconds
        for _ in range(int(seconds / interval) + 1):
            if self.stopping:
                raise RuntimeError(f"stopped while waiting for {what}")
            if check():
                return
            self.check_children()
            if self.problems:
                raise RuntimeError(self.problems[-1])
            if time.monotonic() > deadline:
                break
            time.sleep(interval)
        raise RuntimeError(f"{what} not ready within {int(seconds)} s")

    def stop_children(self) -> None:
        for name in ("lambdas", "moto"):
            proc = self.children.get(name)
            if proc is not None and proc.poll() is None:
                log.info("stopping %s (pid %s)", name, proc.pid)
                proc.terminate()
        for name in ("lambdas", "moto"):
            proc = self.children.get(name)
            if proc is None:
                continue
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in 10 s; killing", name)
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        # anything else we started (function processes of cargo lambda watch, cargo run, ...)
        left = marked_pids()
        if left:
            signal_pids(left, signal.SIGTERM)
            left = wait_gone(left, 5)
            if left:
                signal_pids(left, signal.SIGKILL)
                wait_gone(left, 3)

    def on_signal(self, signum: int, _frame: Any) -> None:
        self.stopping = True

    def run(self) -> int:
        from harness.gateway import EcsLedger, Gateway, GatewayHandler
        from harness.github_mock import GitHubHandler, World
        from harness.httputil import QuietServer
        from harness.runner_sim import RunnerSimulator
        from harness.setup_aws import create_resources, local_overrides
        from harness.template import load_template

        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout
        )
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        started = time.monotonic()
        p = self.ports
        sim = None
        servers: list[QuietServer] = []
        serving: list[QuietServer] = []
        try:
            base_env = dict(os.environ)
            base_env.update(
                AWS_REGION=REGION,
                AWS_DEFAULT_REGION=REGION,
                AWS_ACCESS_KEY_ID=DUMMY_ACCESS_KEY,
                AWS_SECRET_ACCESS_KEY=DUMMY_SECRET_KEY,
            )
            base_env.pop("AWS_PROFILE", None)
            base_env.pop("AWS_SESSION_TOKEN", None)
            # moto's Step Functions calls Lambda (and every AWS integration) at localhost:$MOTO_PORT;
            # moto_server only sets MOTO_PORT when unset: point it at the gateway.
            moto_env = dict(base_env, MOTO_PORT=str(p.gateway))
            self.spawn("moto", [venv_tool("moto_server"), "-H", "127.0.0.1", "-p", str(p.moto)], moto_env, REPO_ROOT)

            ledger = EcsLedger()
            gateway = Gateway(p.moto, p.lambdas, ledger)
            gw_server = QuietServer(("127.0.0.1", p.gateway), GatewayHandler)
            gw_server.ctx = gateway  # type: ignore[attr-defined]
            servers.append(gw_server)

            def moto_ready() -> bool:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{p.moto}/moto-api/data.json", timeout=2) as r:
                        return r.status == 200
                except OSError:
                    return False

            self.wait_until("moto", moto_ready, 60)
            threading.Thread(target=gw_server.serve_forever, name="gateway", daemon=True).start()
            serving.append(gw_server)

            gateway_url = f"http://127.0.0.1:{p.gateway}"
            deploy_config = json.loads(LOCAL_DEPLOY_CONFIG_FILE.read_text())
            ids = create_resources(p.moto, gateway_url, SYNTH_DIR, load_template(SYNTH_DIR), deploy_config)
            ledger.subnet_azs = dict(ids["subnet_azs"])
            ledger.cluster_capacity_providers = set(ids["capacity_providers"])
            github_url = f"http://127.0.0.1:{p.github}"
            webhook_url = f"http://127.0.0.1:{p.lambdas}/lambda-url/webhook/"
            # The template's environment, resolved; the only local change is GitHub's API URL.
            template_env = ids["lambda_env"]
            function_env = local_overrides(template_env, github_url)
            write_json(LOCAL_CONFIG_FILE, json.loads(function_env["TASUKI_CONFIG"]))
            write_json(
                LOCAL_RESOURCES_FILE,
                {
                    "cdk_out": str(SYNTH_DIR),
                    "stack_name": ids["stack_name"],
                    "azs": ids["azs"],
                    "locals": ids["locals"],
                    "template_env": template_env,
                    "github_url": github_url,
                },
            )
            log.info("wrote %s and %s", LOCAL_CONFIG_FILE, LOCAL_RESOURCES_FILE)

            world = World(webhook_url, ids["webhook_secret"], ids["private_key_pem"], ledger, gateway)
            gh_server = QuietServer(("127.0.0.1", p.github), GitHubHandler)
            gh_server.world = world  # type: ignore[attr-defined]
            servers.append(gh_server)
            daemon = self

            def health() -> dict[str, Any]:
                daemon.check_children()
                return {"ok": not daemon.problems, "problems": list(daemon.problems)}

            gh_server.health = health  # type: ignore[attr-defined]
            threading.Thread(target=gh_server.serve_forever, name="github-mock", daemon=True).start()
            serving.append(gh_server)

            lambda_env = dict(
                base_env,
                AWS_ENDPOINT_URL=gateway_url,
                RUST_LOG=os.environ.get("TASUKI_LOCAL_RUST_LOG", "info"),
                PATH=f"{Path(sys.executable).parent}{os.pathsep}{base_env.get('PATH', '')}",
            )
            # Nothing but the template's variables reaches the functions' TASUKI_* namespace.
            for k in [k for k in lambda_env if k.startswith("TASUKI_") and k != MARKER_ENV]:
                del lambda_env[k]
            lambda_env.update(function_env)
            watch = [
                venv_tool("cargo-lambda"),
                "lambda",
                "watch",
                "-A",
                "127.0.0.1",
                "-P",
                str(p.lambdas),
                "--concurrency",
                os.environ.get("TASUKI_LOCAL_CONCURRENCY", "4"),
            ]
            if os.environ.get("TASUKI_LOCAL_WATCH_RELOAD") != "1":
                # cargo lambda watch 1.9.2 with --concurrency > 1 and reloading on: instances are
                # restarted by file events while they hold invocations, which then never answer.
                watch.append("--ignore-changes")
            self.spawn("lambdas", watch, lambda_env, lambda_dir())
            self.wait_until("cargo lambda watch", lambda: port_accepts(p.lambdas), 60)

            # Warm the webhook function (and prove config + secrets load): an unsigned request.
            warm: dict[str, Any] = {}

            def webhook_answers() -> bool:
                req = urllib.request.Request(
                    webhook_url,
                    data=b"{}",
                    method="POST",
                    headers={"Content-Type": "application/json", "X-GitHub-Event": "ping"},
                )
                try:
                    with urllib.request.urlopen(req, timeout=120) as r:
                        warm["status"] = r.status
                except urllib.error.HTTPError as exc:
                    warm["status"] = exc.code
                    warm["body"] = exc.read()[:500].decode(errors="replace")
                except OSError as exc:
                    warm["error"] = str(exc)
                    return False
                return True

            self.wait_until("webhook function", webhook_answers, 150, interval=1)
            notes: list[str] = []
            if warm.get("status", 0) >= 500:
                raise RuntimeError(
                    f"webhook function answered an unsigned request with HTTP {warm['status']}: {warm.get('body')}"
                )
            log.info("webhook answered an unsigned request with HTTP %s", warm.get("status"))
            if warm.get("status") not in (400, 401):
                notes.append(f"webhook answered an unsigned request with HTTP {warm.get('status')} (expected 401)")

            sim = RunnerSimulator(world, p.moto, p.gateway)
            sim.start()

            write_env_file(
                LOCAL_ENV_FILE,
                {
                    "AWS_ENDPOINT_URL": gateway_url,
                    "AWS_REGION": REGION,
                    "AWS_DEFAULT_REGION": REGION,
                    "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY,
                    "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY,
                    "TASUKI_TABLE": ids["table_name"],
                    "TASUKI_STATE_MACHINE_ARN": ids["state_machine_arn"],
                    "TASUKI_CLUSTER": ids["cluster_name"],
                    "TASUKI_WEBHOOK_URL": webhook_url,
                    "TASUKI_WEBHOOK_SECRET": ids["webhook_secret"],
                    "TASUKI_GITHUB_URL": github_url,
                    "TASUKI_CONFIG_FILE": str(LOCAL_CONFIG_FILE),
                    "TASUKI_LOCAL_MOTO_URL": f"http://127.0.0.1:{p.moto}",
                    "TASUKI_LOCAL_LAMBDA_URL": f"http://127.0.0.1:{p.lambdas}",
                    "TASUKI_LOCAL_PORT_BASE": str(p.base),
                },
            )
            ready = {
                "pid": os.getpid(),
                "ports": p.as_dict(),
                "urls": {
                    "gateway": gateway_url,
                    "moto": f"http://127.0.0.1:{p.moto}",
                    "lambdas": f"http://127.0.0.1:{p.lambdas}",
                    "webhook": webhook_url,
                    "github": github_url,
                },
                "state_machine_arn": ids["state_machine_arn"],
                "capacity_providers": ids["capacity_providers"],
                "lambdas_pid": self.children["lambdas"].pid,
                "cdk_out": str(SYNTH_DIR),
                "notes": notes,
                "startup_seconds": time.monotonic() - started,
            }
            write_json(READY_FILE, ready)
            log.info("ready: %s", json.dumps(ready))
            while not self.stopping:
                time.sleep(0.5)
                self.check_children()
            log.info("stopping")
            return 0
        except Exception as exc:
            log.exception("startup failed")
            FAILED_FILE.write_text(f"{exc}\n")
            return 1
        finally:
            if sim is not None:
                sim.stop()
            for s in serving:
                s.shutdown()
            for s in servers:
                s.server_close()
            self.stop_children()
            log.info("stopped")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in ("up", "down", "status", "_daemon"):
        print(__doc__, file=sys.stderr)
        return 2
    cmd = argv[1]
    if cmd == "up":
        return cmd_up()
    if cmd == "down":
        return cmd_down()
    if cmd == "status":
        return cmd_status()
    return Daemon().run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
