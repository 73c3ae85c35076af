"""ClickHouse migrations 0003 and 0004 on a database that holds history in the old layout."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from tests.support.helpers import repo_root, vigil_env


async def test_upgrade_keeps_the_first_real_observation(ch, postgres_dsn, tmp_path: Path):
    """A chDB path of its own, in a child process (one chDB engine per process): migrated to
    version 2, an `up` then its late re-run's `expired` written (FINAL read `expired`), then
    0003 and 0004: FINAL reads `up`, the old table is kept, a rerun of 0004 folds, a rerun of
    0003 is refused at its rename. tests/support/clickhouse_upgrade.py holds the steps."""
    url = f"chdb://{tmp_path / 'data'}"
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "tests.support.clickhouse_upgrade", url,
                         postgres_dsn],
        cwd=repo_root(), env=vigil_env(), capture_output=True, text=True, timeout=90,
        check=False)
    assert done.returncode == 0, done.stderr[-3000:]
