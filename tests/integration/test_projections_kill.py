"""A real `vigil sink incidents` process SIGKILLed mid-run, again and again, and restarted
under its name: the projection ends with exactly the rows one uninterrupted projection of the
same events writes (a batch written and never acknowledged is written again, and changes
nothing)."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import incidents
from engine.keys import PROJECTION_GROUP
from tests.support.events import (
    change,
    clear_projections,
    group_done,
    opened,
    projection,
    publish,
    resolved,
)
from tests.support.helpers import reaped, vigil_env, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
KILLS = 4
MIN = 60_000
T0 = int(time.time()) * 1000 - 86_400_000


def outages(monitors: int, count: int) -> list:
    events = []
    for k in range(count):
        for i in range(monitors):
            m, start = f"m{i}", T0 + k * 10 * MIN
            events += [change(m, start, "down", "up", region="eu"), change(m, start, "down", "up"),
                       opened(m, start, regions={"eu": "down"}),
                       change(m, start + MIN, "up", "down", region="eu"),
                       change(m, start + MIN, "up", "down"),
                       resolved(m, start, start + MIN, regions={"eu": "up"})]
    return events


def sink(log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "vigil.cli", "sink", "incidents"],
                                env=vigil_env(**env), stdout=out, stderr=out)


async def test_killed_sinks_leave_the_rows_one_projection_writes(r, keys, pool, ch, redis_url,
                                                                  postgres_dsn, tmp_path):
    await clear_projections(pool, ch)
    events = outages(monitors=200, count=30)
    await publish(r, keys, events)
    env = {"VIGIL_REDIS_URL": redis_url, "VIGIL_POSTGRES_DSN": postgres_dsn,
           "VIGIL_INSTANCE_ID": "projection-1", "VIGIL_SINK_BATCH_SIZE": "100",
           "VIGIL_SINK_FLUSH_MS": "20"}
    rng = random.Random(11)
    log = tmp_path / "sink.log"
    held = []  # what each killed sink had read and not acknowledged
    for _ in range(KILLS):
        before = await pool.fetchval("SELECT count(*) FROM confirmed_history")
        with reaped(sink(log, env)) as proc:
            async def moved(seen: int = before) -> bool:
                return bool(await pool.fetchval("SELECT count(*) FROM confirmed_history") > seen)
            await wait_for(moved, timeout=60)
            await asyncio.sleep(rng.uniform(0, 0.3))  # mid-batch, somewhere
            proc.kill()
            proc.wait()
        held.append((await r.xpending(keys.events, PROJECTION_GROUP))["pending"])
    assert any(held), f"no kill left a batch unacknowledged: {held}"
    assert not await group_done(r, keys.events, PROJECTION_GROUP), "killed too late to matter"
    with reaped(sink(log, env)):
        await wait_for(lambda: group_done(r, keys.events, PROJECTION_GROUP), timeout=60)
    survived = await projection(pool)
    await clear_projections(pool, ch)
    async with pool.acquire() as conn:
        await incidents.project(conn, events)
    assert survived == await projection(pool)
    assert len(survived["incidents"]) == 6000
