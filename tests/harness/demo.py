#!/usr/bin/env python3
"""`make demo`: play one job through the whole lifecycle on the local stack and print its timeline.

The first launch candidate (Fargate Spot in the first AZ) answers "Capacity is unavailable", so the
timeline shows the failed attempt, the fallback to the next candidate, the runner's registration
and the job's completion. Then it checks that no credential leaked into execution history, task
overrides, DynamoDB or the logs. Needs `make local-up` (the Makefile's `demo` target does it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import client  # noqa: E402

LABELS = ["self-hosted", "tasuki"]


def main() -> int:
    try:
        env = client.env()
    except client.StackNotUp as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    config = json.loads(Path(env["TASUKI_CONFIG_FILE"]).read_text())
    first_az = sorted(config["network"]["subnets"])[0]
    subnet = config["network"]["subnets"][first_az]
    client.clear_faults()
    client.add_fault("capacity", capacity_provider="FARGATE_SPOT", subnet=subnet, times=1)
    print(f"demo: Fargate Spot in {first_az} ({subnet}) will answer 'Capacity is unavailable' once")

    started = time.monotonic()
    queued = client.queue_job_full(LABELS, repository="octo-org/app")
    job = str(queued["job_id"])
    print(
        f"demo: GitHub queued job {job} (runs-on: {', '.join(LABELS)}); webhook answered "
        f"{queued['status']} {json.dumps(queued['body'])}"
    )
    try:
        item = client.wait_for_state(job, client.TERMINAL_STATES, timeout=180)
    except TimeoutError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    took = time.monotonic() - started
    try:  # let the execution finish (Finalize) and the runner task's stop event be handled
        client.wait_for_executions_done(job, timeout=30)
    except TimeoutError as exc:
        print(f"demo: {exc}", file=sys.stderr)

    print(f"\nTimeline of job {job} ({item['repository']}, workflow {item.get('workflow')!r}):")
    print(f"  {'#':>3}  {'at':<30} {'event':<26} {'attempt':>7}  candidate / reason")
    for ev in client.timeline(job):
        detail = ev.get("candidate") or ""
        if ev.get("reason"):
            detail = f"{detail}  {ev['reason']}" if detail else ev["reason"]
        print(f"  {ev['seq']:>3}  {ev['at']:<30} {ev['event']:<26} {ev.get('attempt', 0):>7}  {detail}")
    print(f"\nFinal state: {item['state']} (conclusion {item.get('conclusion')!r}) after {took:.1f} s")

    state = client.mock_state()
    print("\nECS RunTask calls:")
    for r in (r for r in state["run_task_requests"] if r["job_id"] == job):
        print(f"  attempt {r['attempt']}: {r['capacity_provider']:<13} {r['subnet']}  -> {r['outcome']}")
    print("GitHub webhooks sent:")
    for w in (w for w in state["webhooks_sent"] if str(w["job_id"]) == job):
        print(f"  {w['action']:<12} -> HTTP {w['status']} {json.dumps(w['body'])}")
    print("Step Functions executions:")
    for ex in client.executions_for_job(job):
        print(f"  {ex['name']}: {ex['status']}")

    # What an operator sees: the same timeline through the `tasuki` CLI, from DynamoDB.
    cli = Path(__file__).resolve().parents[2] / "target" / "debug" / "tasuki"
    print(f"\n$ tasuki jobs show {job}")
    shown = subprocess.run(
        [str(cli), "jobs", "show", job], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    print(shown.stdout or shown.stderr, end="")

    leaks = client.leak_report([job])
    if leaks:
        print("\nCREDENTIAL LEAKS:")
        for leak in leaks:
            print(f"  {leak}")
    else:
        print(
            f"\nNo credential (webhook secret, installation tokens, JIT configs: "
            f"{len(client.secrets_for_leak_check())} values) in execution history, task overrides, "
            f"DynamoDB, webhook answers or .tasuki/logs."
        )
    client.clear_faults()
    return 0 if item["state"] == "completed" and not leaks else 1


if __name__ == "__main__":
    sys.exit(main())
