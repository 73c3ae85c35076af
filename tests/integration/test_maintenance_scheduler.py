"""scheduler.maintenance on a real redis-server and Postgres: the maintenance hash follows a
window's start and end (with a refresh far away, so only the window's own times can move it),
and follows the windows in Postgres as they are added, changed and deleted."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine import maintenance_store
from engine.clock import redis_ms
from engine.maintenance import Window
from executors.kinds import SCHEMA
from scheduler.maintenance import MaintenanceKeeper
from tests.support.helpers import running, store_monitors, wait_for

MONITORS = [{"id": "db", "kind": "tcp", "tags": ["pg"], "tcp": {"host": "127.0.0.1", "port": 9}},
            {"id": "web", "kind": "tcp", "tcp": {"host": "127.0.0.1", "port": 9}}]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


@pytest.fixture
async def stored(pool, clean):
    await pool.execute("TRUNCATE maintenance_windows")
    await store_monitors(pool, SCHEMA.parse(MONITORS), source="api")


async def held(r, keys) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (await r.hgetall(keys.maintenance)).items()}


async def test_the_hash_follows_a_window_from_its_start_to_its_end(r, keys, pool, stored):
    start = await redis_ms(r) + 1_500
    end = start + 1_500
    await maintenance_store.upsert(pool, Window.model_validate(
        {"id": "move", "tags": ["pg"], "mode": "pause", "start": iso(start), "end": iso(end)}),
        "api")
    async with running(MaintenanceKeeper(r, pool, keys, refresh_s=3_600)):
        await wait_for(lambda: _is(r, keys, {"db": f"pause:{end}"}))
        assert await redis_ms(r) >= start
        await wait_for(lambda: _is(r, keys, {}))
        assert await redis_ms(r) >= end


async def test_the_hash_follows_the_windows_in_postgres(r, keys, pool, stored):
    now = await redis_ms(r)
    window = {"id": "upgrade", "monitors": ["web"], "start": iso(now - 60_000),
              "end": iso(now + 600_000)}
    async with running(MaintenanceKeeper(r, pool, keys, refresh_s=0.1)):
        assert await held(r, keys) == {}
        await maintenance_store.upsert(pool, Window.model_validate(window), "api")
        await wait_for(lambda: _is(r, keys, {"web": f"mute:{now + 600_000}"}))
        await maintenance_store.upsert(pool, Window.model_validate(
            {**window, "mode": "pause", "tags": ["pg"]}), "api")
        await wait_for(lambda: _is(r, keys, {"web": f"pause:{now + 600_000}",
                                             "db": f"pause:{now + 600_000}"}))
        await r.delete(keys.maintenance)  # Redis lost it: the next refresh puts it back
        await wait_for(lambda: _is(r, keys, {"web": f"pause:{now + 600_000}",
                                             "db": f"pause:{now + 600_000}"}))
        await pool.execute("UPDATE monitors SET enabled = false WHERE id = 'db'")
        await wait_for(lambda: _is(r, keys, {"web": f"pause:{now + 600_000}"}))
        await maintenance_store.delete(pool, "upgrade")
        await wait_for(lambda: _is(r, keys, {}))


async def _is(r, keys, expected: dict[str, str]) -> bool:
    return await held(r, keys) == expected
