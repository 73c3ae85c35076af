"""Checks nobody will run are recorded: in a region no executor serves, every check past its
deadline (unread, or held by an executor that vanished) becomes an `expired` result written
with its acknowledgement; what is still due, and regions an executor serves, are left alone."""

from __future__ import annotations

from engine import registry
from engine.clock import redis_ms
from engine.events import CheckResult
from engine.keys import EXECUTOR_GROUP, RESULT_GROUPS
from engine.service import Steady
from engine.streams import EVENT_FIELD, ensure_group, event_of
from executors.kinds import SCHEMA
from scheduler.expire import EVERY_S, EXPIRER, Expirer
from tests.support.helpers import store_monitors
from tests.support.kind_executor import check_due


def monitor(monitor_id: str, region: str) -> dict[str, object]:
    return {"id": monitor_id, "kind": "tcp", "regions": [region],
            "tcp": {"host": "127.0.0.1", "port": 9}}


async def put(r, keys, region: str, monitor_id: str, scheduled_ms: int) -> bytes:
    due = check_due(monitor_id, "tcp", {"host": "127.0.0.1", "port": 9}, interval_ms=10_000,
                    scheduled_ms=scheduled_ms)
    event = due.to_json().replace(b'"region":"default"', f'"region":"{region}"'.encode())
    return await r.xadd(keys.checks(region), {EVENT_FIELD: event})


async def test_checks_of_a_region_nobody_serves_expire_once_past_their_deadline(r, keys, pool,
                                                                               clean):
    await store_monitors(pool, SCHEMA.parse([monitor("lost", "nowhere"),
                                             monitor("served", "default")]), source="file")
    for stream in (keys.checks("nowhere"), keys.checks("default")):
        await ensure_group(r, stream, EXECUTOR_GROUP)
    for group in RESULT_GROUPS:
        await ensure_group(r, keys.results, group)
    now = await redis_ms(r)
    await registry.beat(r, keys, "exec-default", "default", now)
    # An executor that served "nowhere" once took one check and vanished.
    held = await put(r, keys, "nowhere", "lost", now - 40_000)
    await r.xreadgroup(EXECUTOR_GROUP, "vanished", {keys.checks("nowhere"): ">"})
    await put(r, keys, "nowhere", "lost", now - 20_000)  # past its deadline, unread
    await put(r, keys, "nowhere", "lost", now)  # still due
    await put(r, keys, "default", "served", now - 20_000)  # its executor will expire it
    expirer = Expirer(r, pool, keys, claim_idle_ms=0, watch_ms=0)
    assert await expirer.run_once() == 2
    got = [CheckResult.from_json(event_of(f)) for _, f in await r.xrange(keys.results)]
    assert sorted(res.scheduled_ms for res in got) == [now - 40_000, now - 20_000]
    assert {(res.outcome, res.region, res.executor) for res in got} == {
        ("expired", "nowhere", EXPIRER)}
    assert (await r.xpending(keys.checks("nowhere"), EXECUTOR_GROUP))["pending"] == 0
    assert held not in {eid for eid, _ in await r.xrange(keys.results)}
    # A second pass finds nothing new: each check expired once; the served region untouched.
    assert await expirer.run_once() == 0
    assert (await r.xinfo_groups(keys.checks("default")))[0]["last-delivered-id"] == b"0-0"


async def test_the_expirer_judges_only_after_watching_redis_for_the_alive_window(r, keys, pool,
                                                                                 clean):
    """After an outage longer than the alive window every executor's last heartbeat is old: an
    expirer back first must not take a served region for unserved and expire the checks its
    executor holds. It judges once it has watched Redis for the window, and then an executor
    that is really gone is."""
    await store_monitors(pool, SCHEMA.parse([monitor("served", "default")]), source="file")
    stream = keys.checks("default")
    await ensure_group(r, stream, EXECUTOR_GROUP)
    for group in RESULT_GROUPS:
        await ensure_group(r, keys.results, group)
    now = await redis_ms(r)
    await registry.beat(r, keys, "exec-default", "default", now - registry.ALIVE_MS - 1)
    held = await put(r, keys, "default", "served", now - 40_000)
    await r.xreadgroup(EXECUTOR_GROUP, "exec-default", {stream: ">"})
    await r.xclaim(stream, EXECUTOR_GROUP, "exec-default", 0, [held], idle=60_000, justid=True)
    clock = [0.0]
    expirer = Expirer(r, pool, keys, claim_idle_ms=0)
    expirer.steady = Steady(2 * EVERY_S, clock=lambda: clock[0])
    assert await expirer.run_once() == 0  # just back: every heartbeat is as old as the outage
    await registry.beat(r, keys, "exec-default", "default", await redis_ms(r))  # it beats again
    while clock[0] * 1000 < registry.ALIVE_MS:
        clock[0] += EVERY_S
        assert await expirer.run_once() == 0
    assert (await r.xpending(stream, EXECUTOR_GROUP))["consumers"] == [
        {"name": b"exec-default", "pending": 1}]
    await registry.beat(r, keys, "exec-default", "default",
                        await redis_ms(r) - registry.ALIVE_MS - 1)  # now it is gone for good
    clock[0] += EVERY_S
    assert await expirer.run_once() == 1
