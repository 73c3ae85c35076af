"""Real `vigil scheduler` and `vigil executor` processes on hosts whose clocks are wrong by an
offset the test injects (libfaketime): scheduling and expiry follow Redis time, so checks are
dispatched neither early nor late, and none is wrongly expired."""

from __future__ import annotations

import glob
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.events import CheckDue, CheckResult
from engine.streams import event_of, parse_id
from executors.kinds import SCHEMA
from tests.support.helpers import store_monitors, vigil_env, wait_for

# Preloaded into the role itself (the `faketime` command would stand between the test and
# the role's signals); the multi-threaded build, since the roles run threads.
LIBFAKETIME = next(iter(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")), None)
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120),
              pytest.mark.skipif(LIBFAKETIME is None,
                                 reason="needs libfaketime (Debian package faketime)")]
INTERVAL_MS = 1_000


def skewed(offset: str, log: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """A role whose clock is `offset` (e.g. +150s) off the real one."""
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "vigil.cli", *args],
                                env={**env, "LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": offset,
                                     "FAKETIME_DONT_FAKE_MONOTONIC": "1"},
                                stdout=out, stderr=out)


@pytest.mark.parametrize(("scheduler_skew", "executor_skew"), [("+150s", "-150s"),
                                                               ("-150s", "+150s")])
async def test_wrong_host_clocks_change_nothing(r, keys, pool, clean, redis_url, postgres_dsn,
                                                tmp_path, scheduler_skew, executor_skew):
    monitors = [{"id": f"m{i}", "kind": "tcp", "interval": "1s", "timeout": "500ms",
                 "tcp": {"host": "127.0.0.1", "port": 9}} for i in range(5)]
    await store_monitors(pool, SCHEMA.parse(monitors), source="file")
    env = vigil_env(VIGIL_REDIS_URL=redis_url, VIGIL_POSTGRES_DSN=postgres_dsn)
    procs = [skewed(scheduler_skew, tmp_path / "scheduler.log", env, "scheduler"),
             skewed(executor_skew, tmp_path / "executor.log", env, "executor")]
    try:
        async def results_flow() -> bool:
            return await r.xlen(keys.results) >= 15

        await wait_for(results_flow, timeout=30)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(30) for proc in procs]
    assert codes == [0, 0]
    for entry_id, fields in await r.xrange(keys.checks("default")):
        due = CheckDue.from_json(event_of(fields))
        written_ms, _ = parse_id(entry_id)  # the stream entry's id is Redis time
        # The slot dispatched is the latest one at or before Redis time: never in its future.
        assert written_ms - INTERVAL_MS < due.scheduled_ms <= written_ms
    got = [CheckResult.from_json(event_of(f)) for _, f in await r.xrange(keys.results)]
    assert {res.outcome for res in got} == {"down"}  # port 9 refuses: down, never expired
