"""One scheduler serving several shards, on a real redis-server and Postgres: each monitor's
plan and checks land in its own shard's keys, a change by NOTIFY reaches the shard it belongs
to, and a shard the scheduler does not serve is left to another."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from engine.shards import Layout, shard_of
from engine.streams import event_of
from executors.kinds import SCHEMA
from scheduler.service import Scheduler
from tests.support.helpers import store_monitors, wait_for

SHARDS = 3
IDS = [f"m{i}" for i in range(12)]


def monitor(monitor_id: str) -> dict[str, object]:
    return {"id": monitor_id, "kind": "tcp", "interval": "1s", "timeout": "500ms",
            "tcp": {"host": "127.0.0.1", "port": 9}}


@pytest.mark.timeout(60)
async def test_each_monitor_is_planned_and_dispatched_in_its_own_shard(r, pool, clean,
                                                                      postgres_dsn):
    by_shard = {s: {m for m in IDS if shard_of(m, SHARDS) == s} for s in ("0", "1", "2")}
    assert all(by_shard.values())  # every shard has monitors
    layout = Layout.of(SHARDS, ["0", "1"])  # shard 2 is another scheduler's
    await store_monitors(pool, SCHEMA.parse([monitor(m) for m in IDS]), source="api")
    scheduler = Scheduler(r, pool, layout.served, reconcile_s=3600, postgres_dsn=postgres_dsn,
                          claim_idle_ms=35_000, shards=SHARDS)
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    try:
        async def dispatched() -> bool:
            return all([await r.xlen(keys.checks("default")) >= len(by_shard[keys.shard])
                        for keys in layout.served])

        await wait_for(dispatched, timeout=10)
        for keys in layout.served:
            planned = {k.decode() for k in await r.hkeys(keys.plan)}
            assert planned == by_shard[keys.shard]
            sent = {orjson.loads(event_of(fields))["monitor_id"]
                    for _, fields in await r.xrange(keys.checks("default"))}
            assert sent == by_shard[keys.shard]
        unserved = layout.all[2]
        assert await r.hlen(unserved.plan) == 0
        assert await r.exists(unserved.checks("default")) == 0

        # A new monitor by NOTIFY lands in its own shard only.
        fresh = next(f"new{i}" for i in range(100) if shard_of(f"new{i}", SHARDS) == "1")
        await store_monitors(pool, SCHEMA.parse([monitor(fresh)]), source="api")

        async def planned_fresh() -> bool:
            return await r.hget(layout.all[1].plan, fresh) is not None

        await wait_for(planned_fresh, timeout=5)
        assert await r.hget(layout.all[0].plan, fresh) is None
    finally:
        stop.set()
        await task
