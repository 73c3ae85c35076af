"""Accounting holds with no executor at all: a real `vigil scheduler` alone, monitors in a
region nothing serves; every check past its deadline gets exactly one `expired` result."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import Counter

import pytest

from engine.events import CheckDue, CheckResult
from engine.keys import RESULT_GROUPS
from engine.streams import ensure_group, event_of
from executors.kinds import SCHEMA
from tests.support.helpers import store_monitors, vigil_env, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def test_checks_nobody_runs_are_expired_once(r, keys, pool, clean, redis_url,
                                                   postgres_dsn, tmp_path):
    monitors = [{"id": f"m{i}", "kind": "tcp", "interval": "1s", "timeout": "500ms",
                 "regions": ["eu-wset"], "tcp": {"host": "127.0.0.1", "port": 9}}
                for i in range(4)]
    await store_monitors(pool, SCHEMA.parse(monitors), source="file")
    for group in RESULT_GROUPS:
        await ensure_group(r, keys.results, group)
    with (tmp_path / "scheduler.log").open("wb") as log:
        proc = await asyncio.to_thread(
            subprocess.Popen, [sys.executable, "-m", "vigil.cli", "scheduler"],
            env=vigil_env(VIGIL_REDIS_URL=redis_url, VIGIL_POSTGRES_DSN=postgres_dsn),
            stdout=log, stderr=log)
    try:
        async def several_expired() -> bool:
            return await r.xlen(keys.results) >= 12

        await wait_for(several_expired, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0
    results = [CheckResult.from_json(event_of(f)) for _, f in await r.xrange(keys.results)]
    per_check = Counter(res.check_id for res in results)
    assert set(per_check.values()) == {1}
    assert {res.outcome for res in results} == {"expired"}
    # A pass expires every unread check already past its deadline (one interval for all, so
    # deadlines come in dispatch order): all that were due by the last pass have a result.
    last_pass = max(res.finished_ms for res in results)
    dues = [CheckDue.from_json(event_of(f))
            for _, f in await r.xrange(keys.checks("eu-wset"))]
    assert {d.check_id for d in dues if d.deadline_ms <= last_pass} == set(per_check)
