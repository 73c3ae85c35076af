"""retry_interval end to end on a real redis-server: the evaluator asks for an extra check of
a failing region (keys.retries), scheduler/dispatch.lua sends it at its time as that region's
check.due with its own check id and the next slot as deadline, counted like a slot; none for
a monitor gone or paused; the executor's result is evaluated like any other."""

from __future__ import annotations

import orjson

from engine.clock import redis_ms
from engine.events import CheckDue, CheckResult, check_id
from engine.keys import EVENT_GROUPS, RESULT_GROUPS
from engine.rules import Rules
from engine.settings import Settings
from engine.streams import EVENT_FIELD, ensure_group, event_of
from evaluator.service import Evaluator, member
from scheduler.dispatch import Dispatcher
from tests.support.helpers import put_plan

INTERVAL_MS = 60_000
ROW = {"id": "web", "kind": "tcp", "interval_ms": INTERVAL_MS, "timeout_ms": 5_000,
       "regions": ["eu", "us"], "spec": {"host": "127.0.0.1", "port": 9}, "version": 2}


async def sent(r, keys, region: str) -> list[tuple[bytes, CheckDue]]:
    return [(event_of(fields), CheckDue.from_json(event_of(fields)))
            for _, fields in await r.xrange(keys.checks(region))]


async def test_a_retry_is_sent_once_at_its_time_with_its_own_check_id(r, keys):
    now = await redis_ms(r)
    next_slot = now + 30_000
    await put_plan(r, keys, ROW, "web")
    await r.zadd(keys.due, {"web": next_slot})
    await r.zadd(keys.retries, {member("web", "eu"): now - 5, member("web", "us"): now + 9_000})
    dispatched, _, _, head, _ = await Dispatcher(r, keys).dispatch()
    assert dispatched == 1
    assert head == now + 9_000  # the next retry is what the dispatcher wakes for
    [(raw, due)] = await sent(r, keys, "eu")
    assert due == CheckDue(check_id=check_id("web", "eu", now - 5), monitor_id="web",
                           region="eu", scheduled_ms=now - 5, deadline_ms=next_slot,
                           interval_ms=INTERVAL_MS, timeout_ms=5_000, spec_version=2,
                           kind="tcp", spec={"host": "127.0.0.1", "port": 9})
    assert orjson.loads(raw) == orjson.loads(due.to_json())
    assert await sent(r, keys, "us") == []
    assert await r.zrange(keys.retries, 0, -1) == [member("web", "us").encode()]
    assert await r.hmget(keys.stats, ["dispatched", "retried"]) == [b"1", b"1"]
    assert (await Dispatcher(r, keys).dispatch())[0] == 0  # sent once


async def test_no_retry_for_a_monitor_gone_or_paused(r, keys):
    now = await redis_ms(r)
    await put_plan(r, keys, ROW, "web")
    await r.zadd(keys.due, {"web": now + 30_000})
    await r.hset(keys.maintenance, "web", f"pause:{now + 600_000}")
    await r.zadd(keys.retries, {member("web", "eu"): now - 5, member("gone", "eu"): now - 5})
    assert (await Dispatcher(r, keys).dispatch())[0] == 0
    assert await r.zcard(keys.retries) == 0
    assert await sent(r, keys, "eu") == []


async def test_a_failing_result_asks_for_a_retry_and_its_result_confirms_sooner(r, keys):
    for group in RESULT_GROUPS:
        await ensure_group(r, keys.results, group)
    for group in EVENT_GROUPS:
        await ensure_group(r, keys.events, group)
    rules = Rules(interval_ms=INTERVAL_MS, regions=("eu",), quorum=1, confirm_down=2,
                  confirm_up=1, stale_after_ms=3 * INTERVAL_MS, flap_changes=6,
                  flap_window_ms=3_600_000, retry_interval_ms=10_000, retries=2,
                  depends_on=())
    await r.hset(keys.rules, "web", rules.to_json())
    slot = await redis_ms(r) - 20_000

    def failed(at: int) -> CheckResult:
        return CheckResult(outcome="down", check_id=check_id("web", "eu", at), monitor_id="web",
                           region="eu", scheduled_ms=at, started_ms=at, finished_ms=at + 3)

    evaluator = Evaluator(r, keys, Settings.from_env())
    await r.xadd(keys.results, {EVENT_FIELD: failed(slot).to_json()})
    await evaluator.evaluate(await evaluator.consumer.read(10, None))
    assert await r.zscore(keys.retries, member("web", "eu")) == slot + 10_000
    # The retry's result (what the executor writes for it) confirms the outage at its time,
    # 10 s after the slot instead of a minute.
    await r.xadd(keys.results, {EVENT_FIELD: failed(slot + 10_000).to_json()})
    await evaluator.evaluate(await evaluator.consumer.read(10, None))
    events = [orjson.loads(f[EVENT_FIELD]) for _, f in await r.xrange(keys.events)]
    assert [(e["type"], e["at_ms"]) for e in events][-1] == ("incident.opened", slot + 10_000)
