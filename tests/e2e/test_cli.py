"""The operator CLI as README's "Operate" shows it (issue 11): `tasuki jobs ls` with its filters (README's
own example lines, run as written), `tasuki cancel` on a job waiting for its runner and on a running
one (the job's execution cleans up: no task running, no runner registered), and the one-line refusals
for a job already finished or unknown. The CLI runs with `.tasuki/local.env`, as README says.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import client

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "target" / "debug" / "tasuki"
LABELS = ["self-hosted", "tasuki-2cpu-4gb"]


def operate_lines(prefix: str) -> list[list[str]]:
    """The command lines of README's "Operate" sh blocks that start with `prefix`, split as a shell would."""
    readme = (REPO / "README.md").read_text()
    operate = readme.split("\n## Operate\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```$", operate, re.M | re.S)
    lines = [line for block in blocks for line in block.splitlines() if line.startswith(prefix)]
    return [shlex.split(line, comments=True) for line in lines]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """`tasuki <args>` with `.tasuki/local.env`, as README's "Operate" runs it."""
    env = {**os.environ, **client.env()}
    env.pop("TASUKI_CONFIG", None)  # it would win over TASUKI_CONFIG_FILE
    return subprocess.run([str(CLI), *args], env=env, capture_output=True, text=True, timeout=120)


def tasuki(*args: str) -> str:
    done = run(*args)
    assert done.returncode == 0, f"tasuki {' '.join(args)}: exit {done.returncode}\n{done.stderr}"
    return done.stdout


def refused(*args: str) -> str:
    """The one line a refused command prints (exit 1, nothing on stdout)."""
    done = run(*args)
    assert (done.returncode, done.stdout) == (1, ""), done
    assert done.stderr.count("\n") == 1, done.stderr
    return done.stderr


def queue(job_ids: list[str], **kwargs: Any) -> str:
    job = client.queue_job(LABELS, **kwargs)
    job_ids.append(job)
    return job


def rows(table: str) -> list[list[str]]:
    """`jobs ls`'s table without its header, each row split into its columns."""
    header, *lines = table.splitlines()
    assert header.split() == ["JOB", "STATE", "ATTEMPT", "REPOSITORY", "CREATED"], header
    return [line.split() for line in lines]


def test_readme_jobs_ls_lines_run_as_written_and_list_what_their_filters_say(job_ids):
    ours = queue(job_ids, behaviour={"hold": True})
    other = queue(job_ids, behaviour={"hold": True}, repository="octo-org/other")
    for job in (ours, other):
        client.wait_for_state(job, "running", timeout=120)
    examples = operate_lines("tasuki jobs ls --")
    assert len(examples) == 2, examples
    for example in examples:
        args = example[1:]
        out = tasuki(*args)
        if "--json" in args:
            listed = json.loads(out)
            assert {(j["state"], j["repository"]) for j in listed} <= {
                ("running", "octo-org/app"),
                ("waiting-for-registration", "octo-org/app"),
            }, listed
            ids = [str(j["job_id"]) for j in listed]
            assert ours in ids and other not in ids, ids
            assert len(listed) <= 20
            created = [j["created_at"] for j in listed]
            assert created == sorted(created, reverse=True), "newest first"
        else:
            assert {row[1] for row in rows(out)} <= {"failed", "timed-out"}, out
    # An RFC 3339 --since; one in the future is refused.
    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = [row[0] for row in rows(tasuki("jobs", "ls", "--since", since, "--repository", "octo-org/other"))]
    assert other in recent and ours not in recent, recent
    later = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert refused("jobs", "ls", "--since", later).startswith("tasuki: the window starts after it ends")
    assert "waiting-for-registration" in tasuki("jobs", "ls", "--help")
    assert refused("jobs", "ls", "--state", "runing").startswith("tasuki: unknown job state `runing`")
    for job in (ours, other):
        client.complete_job(job)
        client.wait_for_state(job, "completed", timeout=120)


def test_tasuki_cancel_ends_a_job_waiting_for_its_runner_and_leaves_a_running_one_to_github(job_ids):
    [cancel_line] = operate_lines("tasuki cancel ")
    assert cancel_line == ["tasuki", "cancel", "<job-id>", "[--reason", "<why>]", "[--json]"], cancel_line
    waiting = queue(job_ids, behaviour={"never_register": [1]})
    client.wait_for_state(waiting, "waiting-for-registration", timeout=120)
    answer = json.loads(tasuki("cancel", waiting, "--reason", "stuck: no runner registers", "--json"))
    assert answer == {
        "job_id": int(waiting),
        "state": "waiting-for-registration",
        "delivered": True,
        "reason": "stuck: no runner registers",
    }
    item = client.wait_for_state(waiting, "cancelled", timeout=120)
    assert item["reason"] == "cancelled on GitHub before a runner took it"
    assert client.timeline(waiting)[-1]["event"] == "cancelled"
    assert client.leftovers(waiting) == {"tasks": [], "runners": []}

    # A job running on its runner is GitHub's to cancel: refused, nothing recorded, it runs on.
    running = queue(job_ids, behaviour={"hold": True})
    client.wait_for_state(running, "running", timeout=120)
    assert refused("cancel", running).startswith(
        f"tasuki: job {running} runs on its runner: cancel its workflow run on GitHub"
    )
    assert client.cancel_job(running)["status"] == 202  # GitHub's cancel
    client.wait_for_state(running, ["completed", "cancelled"], timeout=120)
    assert client.leftovers(running) == {"tasks": [], "runners": []}

    assert refused("cancel", running) == f"tasuki: job {running} already finished: cancelled\n"
    assert refused("cancel", "1") == "tasuki: no job 1 in the lifecycle table\n"


def test_readme_stats_line_runs_as_written_and_counts_the_jobs_it_says(job_ids):
    job = queue(job_ids)
    client.wait_for_state(job, "completed", timeout=120)
    [line] = operate_lines("tasuki stats ")
    assert line[1:] == ["stats", "--since", "1d"], line
    text = tasuki(*line[1:])
    assert re.match(r"\d+ job\(s\): .*completed", text), text
    figures = json.loads(tasuki(*line[1:], "--json"))
    assert figures["by_state"]["completed"] >= 1
    assert figures["queued_to_running_seconds"]["count"] >= 1
    assert sum(day["jobs"] for day in figures["per_day"].values()) == figures["jobs"]
