"""scheduler/dispatch.lua and the maintenance hash, on a real redis-server: a paused monitor
sends nothing while its slot moves on (counted `paused`), a muted one sends the check.due
Python would write with `maintenance` true, and an entry past its end is no window."""

from __future__ import annotations

import orjson
import redis.asyncio as aioredis

from engine.clock import redis_ms
from engine.events import CheckDue, check_id
from engine.keys import Keys
from engine.streams import event_of
from scheduler.dispatch import Dispatcher
from tests.support.helpers import put_plan

INTERVAL_MS = 60_000
REGIONS = ["eu", "us"]


async def seed(r: aioredis.Redis, keys: Keys, monitor_id: str, slot: int) -> None:
    row = {"id": monitor_id, "kind": "tcp", "interval_ms": INTERVAL_MS, "timeout_ms": 5_000,
           "regions": REGIONS, "spec": {"host": "127.0.0.1", "port": 9}, "version": 4}
    await put_plan(r, keys, row, monitor_id)
    await r.zadd(keys.due, {monitor_id: slot})


async def sent(r: aioredis.Redis, keys: Keys, region: str) -> list[tuple[bytes, CheckDue]]:
    return [(event_of(fields), CheckDue.from_json(event_of(fields)))
            for _, fields in await r.xrange(keys.checks(region))]


async def test_a_muted_monitor_is_checked_with_the_flag(r: aioredis.Redis, keys: Keys) -> None:
    slot = await redis_ms(r) - 1
    await seed(r, keys, "db", slot)
    await seed(r, keys, "web", slot)
    await r.hset(keys.maintenance, "db", f"mute:{slot + 600_000}")
    dispatched, skipped, _, _, _ = await Dispatcher(r, keys).dispatch()
    assert (dispatched, skipped) == (4, 0)
    for region in REGIONS:
        events = {event.monitor_id: (raw, event) for raw, event in await sent(r, keys, region)}
        for monitor_id, flag in (("db", True), ("web", False)):
            raw, event = events[monitor_id]
            assert event == CheckDue(
                check_id=check_id(monitor_id, region, slot), monitor_id=monitor_id,
                region=region, scheduled_ms=slot, deadline_ms=slot + INTERVAL_MS,
                interval_ms=INTERVAL_MS, timeout_ms=5_000, spec_version=4, kind="tcp",
                spec={"host": "127.0.0.1", "port": 9}, maintenance=flag)
            assert orjson.loads(raw) == orjson.loads(event.to_json())


async def test_a_paused_monitor_sends_nothing_and_its_slot_moves_on(r: aioredis.Redis,
                                                                    keys: Keys) -> None:
    slot = await redis_ms(r) - 1
    await seed(r, keys, "db", slot)
    await r.hset(keys.maintenance, "db", f"pause:{slot + 600_000}")
    dispatched, _, _, _, _ = await Dispatcher(r, keys).dispatch()
    assert dispatched == 0
    assert [await sent(r, keys, region) for region in REGIONS] == [[], []]
    assert await r.zscore(keys.due, "db") == slot + INTERVAL_MS
    assert int(await r.hget(keys.stats, "paused") or 0) == len(REGIONS)
    assert "dispatched" not in {k.decode() for k in await r.hkeys(keys.stats)}


async def test_an_entry_past_its_end_is_no_window(r: aioredis.Redis, keys: Keys) -> None:
    """The scheduler that kept the hash stopped at the window's end: the checks go out as
    usual, unflagged."""
    now = await redis_ms(r)
    await seed(r, keys, "db", now - 1)
    await r.hset(keys.maintenance, "db", f"pause:{now - 1}")
    assert (await Dispatcher(r, keys).dispatch())[0] == len(REGIONS)
    assert [event.maintenance for region in REGIONS for _, event in await sent(r, keys, region)
            ] == [False, False]
