#!/usr/bin/env python3
"""Figures of the lifecycle on the local stack (not a pass/fail test): Step Functions states per job,
latency webhook → completed, and N concurrent jobs. Needs `make local-up`.

    .tasuki/venv/bin/python tests/harness/measure.py [concurrent jobs, default 20]
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import client  # noqa: E402

LABELS = ["self-hosted", "tasuki"]


def states_entered(job: str) -> int:
    [execution] = client.wait_for_executions_done(job, 120)
    history = client.execution_history(execution["executionArn"])
    return sum(1 for e in history if e["type"].endswith("StateEntered"))


def timed_job() -> tuple[str, float]:
    started = time.monotonic()
    job = client.queue_job(LABELS)
    client.wait_for_state(job, "completed", 180)
    return job, time.monotonic() - started


def main() -> int:
    concurrent = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    config = json.loads(Path(client.env()["TASUKI_CONFIG_FILE"]).read_text())
    client.clear_faults()
    job, seconds = timed_job()
    print(f"one job: {states_entered(job)} states entered; webhook -> completed {seconds:.1f} s")
    first_az = config["network"]["subnets"][sorted(config["network"]["subnets"])[0]]
    client.add_fault("capacity", capacity_provider="FARGATE_SPOT", subnet=first_az, times=1)
    job, seconds = timed_job()
    print(f"one capacity fallback: {states_entered(job)} states entered; webhook -> completed {seconds:.1f} s")
    client.clear_faults()
    started = time.monotonic()
    with ThreadPoolExecutor(concurrent) as pool:
        results = list(pool.map(lambda _: timed_job(), range(concurrent)))
    jobs = [j for j, _ in results]
    executions = sum(len(client.executions_for_job(j)) for j in jobs)
    tasks = sum(len(client.ecs_tasks_for_job(j)) for j in jobs)
    slowest = max(s for _, s in results)
    print(
        f"{concurrent} concurrent jobs: all completed in {time.monotonic() - started:.1f} s "
        f"(slowest {slowest:.1f} s); {executions} executions, {tasks} tasks"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
