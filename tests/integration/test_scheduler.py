"""The dispatch script and the monitor sync on a real redis-server and Postgres."""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson
import pytest

from engine import heartbeats, store
from engine.clock import redis_ms
from engine.connections import redis_client
from engine.events import DEADLINE_MARK, MAINTENANCE_MARK, SLOT_MARK, CheckDue, check_id
from engine.streams import event_of
from executors.kinds import SCHEMA
from scheduler.dispatch import Dispatcher
from scheduler.plan import (
    COUNT_PREFIX,
    MONITOR_MARK,
    REGION_MARK,
    STRING_MARK,
    VERSION_MARK,
    compile_plan,
)
from scheduler.schedule import phase_ms
from scheduler.service import Scheduler
from scheduler.sync import MonitorSync
from tests.support.helpers import store_monitors, wait_for


def plan_row(mid: str, interval_ms: int, regions: tuple[str, ...] = ("default",),
             version: int = 1) -> dict[str, object]:
    return {"id": mid, "kind": "tcp", "interval_ms": interval_ms, "timeout_ms": 500,
            "regions": list(regions), "version": version,
            "spec": {"host": "127.0.0.1", "port": 9}}


async def seed(r, keys, rows, slot_of):
    """Plans, and each monitor due at slot_of(row)."""
    async with r.pipeline(transaction=False) as pipe:
        for row in rows:
            plan = compile_plan(row)
            pipe.hset(keys.plan, row["id"], plan.plan)
            pipe.hset(keys.shapes, plan.digest, plan.shape)
            pipe.zadd(keys.due, {row["id"]: slot_of(row)})
        await pipe.execute()


async def events(r, stream):
    return [CheckDue.from_json(event_of(f)) for _, f in await r.xrange(stream)]


async def test_two_schedulers_never_double_dispatch(r, keys, redis_url):
    rows = [plan_row(f"m{i}", 1_000 + (i % 7) * 250) for i in range(300)]
    start = await redis_ms(r)
    # Each monitor's first slot within its first interval from now, on its own grid.
    await seed(r, keys, rows, lambda row: start + phase_ms(row["id"], row["interval_ms"]))
    other = redis_client(redis_url)
    a, b = Dispatcher(r, keys, limit=50), Dispatcher(other, keys, limit=50)
    # Both race over three seconds of Redis time.
    while await redis_ms(r) < start + 3_000:
        await asyncio.gather(a.dispatch(), b.dispatch(), a.dispatch())
    await other.aclose()
    dispatched = await events(r, keys.checks("default"))
    ids = Counter(e.check_id for e in dispatched)
    assert dispatched
    assert max(ids.values()) == 1
    by_monitor = {row["id"]: row["interval_ms"] for row in rows}
    for e in dispatched:
        # Every slot on the monitor's own grid: no drift.
        interval = by_monitor[e.monitor_id]
        assert (e.scheduled_ms - start - phase_ms(e.monitor_id, interval)) % interval == 0
        assert e.check_id == check_id(e.monitor_id, e.region, e.scheduled_ms)
        assert e.deadline_ms == e.scheduled_ms + interval
    stats = await r.hgetall(keys.stats)
    assert int(stats[b"dispatched"]) == len(dispatched)
    assert b"skipped" not in stats


async def test_missed_slots_are_skipped_and_counted(r, keys):
    # The scheduler was away for five and a half intervals.
    due = await redis_ms(r) - 5_500
    await seed(r, keys, [plan_row("late", 1_000)], lambda _: due)
    dispatched, skipped, more, head, now = await Dispatcher(r, keys).dispatch()
    assert (dispatched, skipped, more) == (1, 5, False)
    [event] = await events(r, keys.checks("default"))
    assert event.scheduled_ms == due + 5_000
    assert head == due + 6_000 > now


async def test_one_event_per_region_and_deleted_monitors_leave(r, keys):
    now = await redis_ms(r)
    await seed(r, keys, [plan_row("multi", 2_000, ("eu", "us"))], lambda _: now - 1)
    await r.zadd(keys.due, {"ghost": now - 1})  # in the schedule, but its plan is gone
    dispatched, *_ = await Dispatcher(r, keys).dispatch()
    assert dispatched == 2
    eu, us = await events(r, keys.checks("eu")), await events(r, keys.checks("us"))
    assert [e.region for e in eu + us] == ["eu", "us"]
    assert eu[0].scheduled_ms == us[0].scheduled_ms
    assert await r.zscore(keys.due, "ghost") is None


async def test_sync_keeps_schedule_unless_interval_changes(r, keys, pool, clean):
    monitors = SCHEMA.parse([{"id": "web", "kind": "tcp", "interval": "10s", "timeout": "1s",
                                "tcp": {"host": "127.0.0.1", "port": 9}}])
    await store_monitors(pool, monitors, source="file")
    sync = MonitorSync(r, pool, keys)
    await sync.reconcile()
    first = await r.zscore(keys.due, "web")
    assert first is not None
    await pool.execute("UPDATE monitors SET tags = '{a}', version = version + 1")
    await sync.reconcile()
    assert await r.zscore(keys.due, "web") == first
    await pool.execute("UPDATE monitors SET interval_ms = 20000, version = version + 1")
    await sync.reconcile()
    # The plan is the interval, the regions, its shape's digest, the version and the spec's
    # strings; the shape is the check.due with marks for them (scheduler/plan.py).
    interval, regions, digest, version, *strings = (await r.hget(keys.plan, "web")).split(
        b"\x00")
    assert (interval, regions, version, strings) == (b"20000", b"default", b"3",
                                                     [b'"127.0.0.1"'])
    shape = await r.hget(keys.shapes, digest)
    for mark, value in ((SLOT_MARK, b"0"), (DEADLINE_MARK, b"0"), (MAINTENANCE_MARK, b"false"),
                        (MONITOR_MARK, b"web"), (REGION_MARK, b"default"), (VERSION_MARK, b"3"),
                        (STRING_MARK, strings[0])):
        shape = shape.replace(mark, value)
    event = orjson.loads(shape)
    assert (event["spec_version"], event["interval_ms"]) == (3, 20_000)
    assert event["spec"] == {"host": "127.0.0.1", "port": 9}
    await pool.execute("UPDATE monitors SET enabled = false, version = version + 1")
    await sync.reconcile()
    # The shape leaves with its last plan.
    assert (await r.hgetall(keys.plan), await r.hgetall(keys.shapes)) == ({}, {})
    assert await r.zscore(keys.due, "web") is None


async def test_monitors_of_one_form_share_a_shape_until_the_last_leaves(r, keys, pool, clean):
    """A shape is kept once for every plan that names it, and goes with the last of them,
    whether a change moves a plan to another shape or the monitor is deleted."""
    monitors = SCHEMA.parse([{"id": f"m{i}", "kind": "tcp", "interval": "10s", "timeout": "1s",
                              "tcp": {"host": f"10.0.0.{i}", "port": 9}} for i in range(20)])
    await store_monitors(pool, monitors, source="file")
    sync = MonitorSync(r, pool, keys)
    await sync.reconcile()

    async def shapes() -> dict[bytes, bytes]:
        return await r.hgetall(keys.shapes)

    [digest] = [k for k in await shapes() if not k.startswith(COUNT_PREFIX)]
    assert (await shapes())[COUNT_PREFIX + digest] == b"20"
    await pool.execute("UPDATE monitors SET spec = spec || '{\"port\": 10}' WHERE id = 'm0'")
    await sync.reconcile()
    assert len(await shapes()) == 4
    assert (await shapes())[COUNT_PREFIX + digest] == b"19"
    await pool.execute("DELETE FROM monitors WHERE id <> 'm0'")
    await sync.reconcile()
    assert COUNT_PREFIX + digest not in await shapes()
    assert len(await shapes()) == 2


@pytest.mark.timeout(30)
async def test_a_change_reaches_the_running_scheduler_by_notify(r, keys, pool, clean,
                                                                postgres_dsn):
    # A reconcile period far beyond the test: only LISTEN/NOTIFY can deliver the change.
    scheduler = Scheduler(r, pool, keys, reconcile_s=3600, postgres_dsn=postgres_dsn,
                  claim_idle_ms=35_000)
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    try:
        async def listening() -> bool:
            return await pool.fetchval("SELECT count(*) FROM pg_stat_activity "
                                       "WHERE query LIKE 'LISTEN %vigil_monitors%'") > 0

        await wait_for(listening)
        monitors = SCHEMA.parse([{"id": "fresh", "kind": "tcp", "interval": "1s",
                                    "timeout": "500ms", "tcp": {"host": "127.0.0.1",
                                                                 "port": 9}}])
        await store_monitors(pool, monitors, source="api")

        async def planned() -> bool:
            return await r.hget(keys.plan, "fresh") is not None

        await wait_for(planned, timeout=2)

        async def dispatched() -> bool:
            return await r.xlen(keys.checks("default")) > 0

        await wait_for(dispatched, timeout=3)
        await pool.execute("DELETE FROM monitors WHERE id = 'fresh'")

        async def gone() -> bool:
            return await r.hget(keys.plan, "fresh") is None

        await wait_for(gone, timeout=2)
    finally:
        stop.set()
        await task


WEB = {"id": "web", "kind": "tcp", "interval": "10s", "timeout": "1s",
       "tcp": {"host": "127.0.0.1", "port": 9}}


async def plan_version(r, keys, monitor_id: str) -> int | None:
    plan = await r.hget(keys.plan, monitor_id)
    return None if plan is None else int(plan.split(b"\x00")[3])


async def test_a_slow_reconcile_cannot_roll_a_plan_back(r, keys, pool, clean):
    await store_monitors(pool, SCHEMA.parse([WEB]), source="file")
    sync = MonitorSync(r, pool, keys)
    await sync.reconcile()
    slow_read = await store.plan_rows(pool, ["web"])  # a reconcile reads version 1 ...
    await pool.execute("UPDATE monitors SET interval_ms = 20000, version = version + 1")
    sync.on_notify(None, 0, "", "web")  # ... the change lands by notify ...
    await sync.apply_changes()
    assert await plan_version(r, keys, "web") == 2
    await sync._upsert(slow_read)  # ... and the slow reconcile writes what it read
    assert await plan_version(r, keys, "web") == 2


async def test_a_slow_reconcile_cannot_bring_a_deleted_monitor_back(r, keys, pool, clean):
    await store_monitors(pool, SCHEMA.parse([WEB]), source="file")
    sync = MonitorSync(r, pool, keys)
    await sync.reconcile()
    slow_read = await store.plan_rows(pool, ["web"])
    revision = await pool.fetchval("DELETE FROM monitors WHERE id = 'web' RETURNING revision")
    sync.on_notify(None, 0, "", f"web:{revision}")  # the trigger names the revision deleted
    await sync.apply_changes()
    await sync._upsert(slow_read)
    assert (await r.hget(keys.plan, "web"), await r.zscore(keys.due, "web")) == (None, None)
    # Made again, the monitor has a newer revision and is scheduled.
    await store_monitors(pool, SCHEMA.parse([WEB]), source="api")
    sync.on_notify(None, 0, "", "web")
    await sync.apply_changes()
    assert await plan_version(r, keys, "web") == 1


async def test_the_reconcile_repairs_what_redis_lost(r, keys, pool, clean):
    monitors = [{**WEB, "id": f"m{i}"} for i in range(50)]
    await store_monitors(pool, SCHEMA.parse(monitors), source="file")
    sync = MonitorSync(r, pool, keys)
    await sync.reconcile()
    dues = {m["id"]: int(await r.zscore(keys.due, m["id"])) for m in monitors}

    async def back_on_its_slots(ids: list[str]) -> None:
        """Due again on its own phase: the slot it had, or a later one of the same phase when
        its slot passed meanwhile (nothing dispatches here), never past the next one."""
        latest = await redis_ms(r) + 10_000
        for monitor_id in ids:
            due = int(await r.zscore(keys.due, monitor_id))
            assert (due - dues[monitor_id]) % 10_000 == 0, monitor_id
            assert dues[monitor_id] <= due <= latest, monitor_id

    await r.zrem(keys.due, "m3")  # a due entry lost, its plan intact
    await sync.reconcile()
    await back_on_its_slots(["m3"])
    await r.flushall()  # everything lost; this process still remembers it all
    await sync.reconcile()
    assert await r.hlen(keys.plan) == 50
    await back_on_its_slots(list(dues))


async def test_a_deleted_monitor_takes_its_heartbeats_along_a_paused_one_keeps_them(
        r, keys, pool, clean):
    push = [{"id": p, "kind": "push", "interval": "1m"} for p in ("cron", "paused")]
    await store_monitors(pool, SCHEMA.parse(push), source="file")
    sync = MonitorSync(r, pool, keys)
    await sync.reconcile()
    for monitor_id in ("cron", "paused"):
        await heartbeats.Recorder(r, keys).record(monitor_id, "up", None)
    revision = await pool.fetchval("DELETE FROM monitors WHERE id = 'cron' RETURNING revision")
    await pool.execute("UPDATE monitors SET enabled = false WHERE id = 'paused'")
    sync.on_notify(None, 0, "", f"cron:{revision}")
    sync.on_notify(None, 0, "", "paused")
    await sync.apply_changes()
    assert (await r.exists(keys.beats("cron")), await r.exists(keys.beats("paused"))) == (0, 1)
    # The reconcile finds what a lost notification left behind, the same way.
    await store_monitors(pool, SCHEMA.parse([{**push[0], "id": "nightly"}]), source="file")
    await sync.reconcile()
    await heartbeats.Recorder(r, keys).record("nightly", "up", None)
    await pool.execute("DELETE FROM monitors WHERE id = 'nightly'")  # its notify is lost
    await sync.reconcile()
    assert (await r.exists(keys.beats("nightly")), await r.exists(keys.beats("paused"))) == (0, 1)
