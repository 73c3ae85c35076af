"""Monitors spread over shards (engine.shards): the same mapping in Python and in Postgres, and
a scheduler's sync that holds exactly its shard's monitors, on a real redis-server and
Postgres."""

from __future__ import annotations

import random
import string

import asyncpg
import pytest
import redis.asyncio as aioredis

from engine import store
from engine.keys import Keys
from engine.monitors import MAX_ID_LENGTH, MonitorBase
from engine.shards import SQL_EXPR, shard_of
from executors.kinds import SCHEMA
from scheduler.sync import MonitorSync
from tests.support.helpers import store_monitors

SHARDS = 2


def monitors(count: int, regions_of: dict[int, list[str]] | None = None) -> list[MonitorBase]:
    return SCHEMA.parse([{"id": f"m{i}", "kind": "tcp", "interval": "10s", "timeout": "1s",
                          "regions": (regions_of or {}).get(i, ["default"]),
                          "tcp": {"host": "127.0.0.1", "port": 9}} for i in range(count)])


def ids_of_every_shape(count: int) -> list[str]:
    """Valid monitor ids (ID_PATTERN) of every length, drawn from a fixed seed."""
    rand = random.Random(12)
    first, rest = string.ascii_letters + string.digits, string.ascii_letters + string.digits + "_.-"
    out = {rand.choice(first) + "".join(rand.choices(rest, k=rand.randrange(MAX_ID_LENGTH)))
           for _ in range(count)}
    return sorted(out | {"a", "0", "m1", "web", "x" * MAX_ID_LENGTH})


@pytest.mark.parametrize("count", [1, 2, 3, 7, 16, 1000])
async def test_python_and_postgres_agree_on_every_shard(pool: asyncpg.Pool, count: int) -> None:
    ids = ids_of_every_shape(5_000)
    rows = await pool.fetch(f"SELECT id, {SQL_EXPR.format(count=count)} AS shard "
                            "FROM unnest($1::text[]) AS id", ids)
    assert {r["id"]: str(r["shard"]) for r in rows} == {i: shard_of(i, count) for i in ids}


async def test_each_shards_sync_holds_exactly_its_monitors(
        r: aioredis.Redis, pool: asyncpg.Pool, clean: None) -> None:
    await store_monitors(pool, monitors(200), source="file")
    syncs = [MonitorSync(r, pool, Keys(str(n)), SHARDS) for n in range(SHARDS)]
    for sync in syncs:
        await sync.reconcile()
    for sync in syncs:
        wanted = {f"m{i}" for i in range(200) if shard_of(f"m{i}", SHARDS) == sync.keys.shard}
        assert 0 < len(wanted) < 200
        for key in (sync.keys.plan, sync.keys.revisions, sync.keys.rules):
            assert {k.decode() for k in await r.hkeys(key)} == wanted
        assert {k.decode() for k in await r.zrange(sync.keys.due, 0, -1)} == wanted
    # A reconcile of one shard leaves the other's monitors alone.
    await syncs[0].reconcile()
    assert await r.hlen(syncs[1].keys.plan) == len(
        [i for i in range(200) if shard_of(f"m{i}", SHARDS) == "1"])


async def test_a_notification_for_another_shards_monitor_is_ignored(
        r: aioredis.Redis, pool: asyncpg.Pool, clean: None) -> None:
    await store_monitors(pool, monitors(20), source="file")
    mine = [f"m{i}" for i in range(20) if shard_of(f"m{i}", SHARDS) == "0"]
    theirs = [f"m{i}" for i in range(20) if shard_of(f"m{i}", SHARDS) == "1"]
    sync = MonitorSync(r, pool, Keys("0"), SHARDS)
    for mid in mine + theirs:
        sync.on_notify(None, 0, "vigil_monitors", mid)
    await sync.apply_changes()
    assert {k.decode() for k in await r.hkeys(Keys("0").plan)} == set(mine)
    assert await r.exists(Keys("1").plan, Keys("1").tombstones) == 0


async def test_the_reconcile_repairs_the_regions_set(
        r: aioredis.Redis, pool: asyncpg.Pool, keys: Keys, clean: None) -> None:
    """The regions set is what the enabled monitors name: put back when Redis lost it, a
    region no monitor names any more taken out."""
    await store_monitors(pool, monitors(3, {0: ["eu"], 1: ["eu", "us"], 2: ["ap"]}),
                         source="file")
    sync = MonitorSync(r, pool, keys)
    await sync.reconcile()
    assert await r.smembers(keys.regions) == {b"eu", b"us", b"ap"}
    await r.delete(keys.regions)
    await r.sadd(keys.regions, "gone")
    await pool.execute("UPDATE monitors SET enabled = false WHERE id = 'm2'")
    await sync.reconcile()
    assert await r.smembers(keys.regions) == {b"eu", b"us"}
    assert await store.regions(pool) == {"eu", "us"}
