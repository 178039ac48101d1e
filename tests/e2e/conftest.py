"""End-to-end tests: a real webhook through the real ASL on moto, the real Lambdas, ECS and GitHub mocks.

The local stack must be up (`make local-up`; `make e2e` does it). Each test clears RunTask faults.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import client  # noqa: E402
from harness.common import LOCAL_CONFIG_FILE  # noqa: E402


@pytest.fixture(scope="session")
def config() -> dict:
    return json.loads(Path(LOCAL_CONFIG_FILE).read_text())


@pytest.fixture(autouse=True)
def no_faults():
    client.clear_faults()
    yield
    client.clear_faults()


@pytest.fixture(scope="session")
def job_ids() -> list[str]:
    """Every job a test queued, for the leak check at the end."""
    return []
