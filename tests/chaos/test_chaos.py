"""bench/chaos.py at the CI size: the whole pipeline as real processes (two schedulers, three
executors with stable names, both sinks) on redis-server with an AOF, embedded Postgres and
chDB, 30 s of seeded faults, a drain, every invariant checked with SQL (see the script's
docstring and docs/reliability.md). The run exits non-zero when an invariant fails; its report
is the failure message.

Every fault of the script is drawn (kill-role, stop-executor, kill-redis, flushall,
stop-postgres, clickhouse-errors), each of which passes alone for 60 s (docs/reliability.md).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.helpers import repo_root

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


def test_the_pipeline_keeps_its_invariants_under_faults() -> None:
    done = subprocess.run(
        [sys.executable, "bench/chaos.py", "--seed", "1", "--duration", "30", "--monitors", "60",
         "--interval", "5"],
        cwd=repo_root(), capture_output=True, text=True, timeout=140, check=False)
    assert done.returncode == 0, f"{done.stdout[-8000:]}\n{done.stderr[-3000:]}"
    assert "result: PASS" in done.stdout
