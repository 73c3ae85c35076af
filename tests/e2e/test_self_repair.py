"""Redis loses everything under a running pipeline of real processes (FLUSHALL, as a restart
without persistence or a failover that missed the tail would): with no process restarted,
every monitor is dispatched again within one reconcile period and results flow again."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.events import CheckDue, CheckResult
from engine.streams import event_of
from executors.kinds import SCHEMA
from tests.support.helpers import store_monitors, vigil_env, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
MONITORS = 12
RECONCILE_S = 3


@contextlib.contextmanager
def roles(workdir: Path, env: dict[str, str]) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, args in {"scheduler": ["scheduler"], "executor": ["executor"],
                           "status": ["sink", "status"]}.items():
            with (workdir / f"{name}.log").open("wb") as log:
                procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "vigil.cli", *args],
                    env={**env, "VIGIL_INSTANCE_ID": name}, stdout=log, stderr=log)
        yield procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


async def seen_since(r, stream: str, since_ms: int, parse) -> set[str]:
    """Monitor ids in the stream's events after `since_ms` (entry ids start with their ms)."""
    entries = await r.xrange(stream, min=f"{since_ms}-0")
    return {parse(event_of(fields)).monitor_id for _, fields in entries}


async def test_flushall_under_a_running_pipeline_is_repaired(r, keys, pool, clean, redis_url,
                                                              postgres_dsn, tmp_path):
    monitors = [{"id": f"m{i}", "kind": "tcp", "interval": "1s", "timeout": "500ms",
                 "tcp": {"host": "127.0.0.1", "port": 9}} for i in range(MONITORS)]
    await store_monitors(pool, SCHEMA.parse(monitors), source="file")
    ids = {m["id"] for m in monitors}
    env = vigil_env(VIGIL_REDIS_URL=redis_url, VIGIL_POSTGRES_DSN=postgres_dsn,
                    VIGIL_RECONCILE_S=str(RECONCILE_S))
    with roles(tmp_path, env) as procs:
        async def flowing(since: int) -> bool:
            return await seen_since(r, keys.results, since, CheckResult.from_json) == ids

        await wait_for(lambda: flowing(0), timeout=30)
        await r.flushall()
        flushed = int(time.time() * 1000)

        async def dispatched_again() -> bool:
            return await seen_since(r, keys.checks("default"), flushed,
                                    CheckDue.from_json) == ids

        # Within one reconcile period (and the dispatch of the slot after it).
        await wait_for(dispatched_again, timeout=RECONCILE_S + 5)
        await wait_for(lambda: flowing(flushed), timeout=15)

        async def status_moved_on() -> bool:
            rows = await pool.fetch("SELECT scheduled_ms FROM monitor_status")
            return len(rows) == MONITORS and all(r_["scheduled_ms"] > flushed for r_ in rows)

        await wait_for(status_moved_on, timeout=15)
        assert all(proc.poll() is None for proc in procs.values()), "a role died"
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        codes = {name: await asyncio.to_thread(proc.wait, 30) for name, proc in procs.items()}
    assert codes == dict.fromkeys(codes, 0)
