"""scheduler.maintenance on a real redis-server and Postgres: the maintenance hash follows a
window's start and end (with a refresh far away, so only the window's own times can move it),
and follows the windows in Postgres as they are added, changed and deleted."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine import maintenance_store
from engine.clock import redis_ms
from engine.events import CheckDue
from engine.keys import Keys
from engine.maintenance import Window
from engine.shards import Layout
from engine.streams import event_of
from executors.kinds import SCHEMA
from scheduler.maintenance import MaintenanceKeeper
from scheduler.service import Scheduler
from tests.support.helpers import running, store_monitors, wait_for

MONITORS = [{"id": "db", "kind": "tcp", "tags": ["pg"], "interval": "1s", "timeout": "500ms",
             "tcp": {"host": "127.0.0.1", "port": 9}},
            {"id": "web", "kind": "tcp", "interval": "1s", "timeout": "500ms",
             "tcp": {"host": "127.0.0.1", "port": 9}}]


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


@pytest.mark.timeout(60)
async def test_the_scheduler_mutes_and_pauses_what_its_windows_cover(r, keys, pool, stored,
                                                                     postgres_dsn):
    """The whole role: its sync plans the monitors, its keeper fills the hash, its dispatch
    sends db's checks flagged and none of web's while their windows last."""
    now = await redis_ms(r)
    for window in ({"id": "backup", "tags": ["pg"], "start": iso(now - 1_000),
                    "end": iso(now + 600_000)},
                   {"id": "deploy", "monitors": ["web"], "mode": "pause",
                    "start": iso(now - 1_000), "end": iso(now + 600_000)}):
        await maintenance_store.upsert(pool, Window.model_validate(window), "api")
    stream = keys.checks("default")

    async def sent() -> list[CheckDue]:
        return [CheckDue.from_json(event_of(f)) for _, f in await r.xrange(stream)]

    async def three_of_db() -> bool:
        return sum(e.monitor_id == "db" for e in await sent()) >= 3

    async with running(Scheduler(r, pool, keys, reconcile_s=0.2, postgres_dsn=postgres_dsn,
                                 claim_idle_ms=35_000)):
        await wait_for(three_of_db, timeout=20)
    events = await sent()
    # Sent before the keeper's first write, a slot may go unflagged; none after one flagged.
    flags = [e.maintenance for e in events if e.monitor_id == "db"]
    assert flags[-1]
    assert flags == sorted(flags)
    paused = [e for e in events if e.monitor_id == "web" and e.scheduled_ms > now + 1_000]
    assert paused == []
    assert int(await r.hget(keys.stats, "paused") or 0) >= 1


async def _is(r, keys, expected: dict[str, str]) -> bool:
    return await held(r, keys) == expected


async def test_each_shards_hash_holds_its_own_monitors(r, pool, stored):
    """With 8 shards `db` lives in shard 0 and `web` in shard 4: one keeper serving both
    writes each into its own shard's hash, and a shard it does not serve is left alone."""
    now = await redis_ms(r)
    await maintenance_store.upsert(pool, Window.model_validate(
        {"id": "all", "monitors": ["db", "web"], "start": iso(now - 60_000),
         "end": iso(now + 600_000)}), "api")
    await r.hset(Keys("5").maintenance, "stranger", "pause:1")
    layout = Layout.of(8, ["0", "4"])
    async with running(MaintenanceKeeper(r, pool, layout.served, refresh_s=0.1, shards=8)):
        await wait_for(lambda: _is(r, Keys("4"), {"web": f"mute:{now + 600_000}"}))
        assert await held(r, Keys("0")) == {"db": f"mute:{now + 600_000}"}
    assert await held(r, Keys("5")) == {"stranger": "pause:1"}
