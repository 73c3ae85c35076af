"""The evaluator on a real redis-server: results in, confirmed state and events out, each
transition's event exactly once whatever redeliveries, claims and concurrent evaluators do;
regions going silent turn unknown, but a backlog is not silence."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.clock import redis_ms
from engine.events import CheckResult, Event
from engine.keys import EVALUATOR_GROUP, EVENT_GROUPS, RESULT_GROUPS, Keys
from engine.rules import Rules
from engine.settings import Settings
from engine.streams import EVENT_FIELD, Consumer, ensure_group
from evaluator.service import Evaluator, member
from evaluator.state import MonitorState
from tests.support.helpers import running, wait_for

INTERVAL = 10_000
RULES = Rules(interval_ms=INTERVAL, regions=("eu",), quorum=1, confirm_down=2, confirm_up=1,
              stale_after_ms=3 * INTERVAL, flap_changes=6, flap_window_ms=3_600_000,
              retry_interval_ms=None, retries=2, depends_on=())


def result(monitor_id: str, at_ms: int, outcome: str, region: str = "eu") -> CheckResult:
    return CheckResult(outcome=outcome, check_id=f"{monitor_id}:{region}:{at_ms}",  # type: ignore[arg-type]
                       monitor_id=monitor_id, region=region, scheduled_ms=at_ms,
                       started_ms=at_ms, finished_ms=at_ms + 3)


@pytest.fixture
async def setup(r, keys):
    for group in RESULT_GROUPS:
        await ensure_group(r, keys.results, group)
    for group in EVENT_GROUPS:
        await ensure_group(r, keys.events, group)


def evaluator(r, keys, name: str = "ev-1", claim_idle_ms: int = 30_000) -> Evaluator:
    settings = Settings.from_env().with_overrides(instance_id=name, max_timeout_ms=claim_idle_ms,
                                                  claim_grace_ms=0)
    return Evaluator(r, keys, settings)


async def add(r, keys, *results: CheckResult) -> None:
    """Each result written when its check finished, as an executor would (entry ids are the
    Redis time of the write)."""
    for item in results:
        await r.xadd(keys.results, {EVENT_FIELD: item.to_json()}, id=f"{item.finished_ms}-*")


async def events(r, keys) -> list[Event]:
    return [Event.from_json(fields[EVENT_FIELD]) for _, fields in await r.xrange(keys.events)]


async def state_of(r, keys, monitor_id: str) -> MonitorState:
    raw = await r.get(keys.evaluation(monitor_id))
    return MonitorState.from_json(raw.partition(b":")[2])


OUTAGE = ["up", "down", "down", "down", "up"]


async def test_results_become_one_event_per_transition(r, keys, setup):
    await r.hset(keys.rules, "web", RULES.to_json())
    base = await redis_ms(r)
    await add(r, keys, *[result("web", base + i * INTERVAL, o) for i, o in enumerate(OUTAGE)])
    ev = evaluator(r, keys)
    await ev.evaluate(await ev.consumer.read(100, None))
    got = [(e.type, e.status) for e in await events(r, keys)]
    assert got == [("status.changed", "up"), ("monitor.changed", "up"),
                   ("status.changed", "down"), ("monitor.changed", "down"),
                   ("incident.opened", None),
                   ("status.changed", "up"), ("monitor.changed", "up"),
                   ("incident.resolved", None)]
    assert (await state_of(r, keys, "web")).status == "up"
    assert await r.xpending(keys.results, EVALUATOR_GROUP) == {
        "pending": 0, "min": None, "max": None, "consumers": []}


async def test_a_redelivered_or_claimed_batch_writes_no_event_twice(r, keys, setup):
    """An evaluator reads a batch and stalls (or dies) before applying it; a peer claims it
    and evaluates it; then the first one wakes up and evaluates its copy too."""
    await r.hset(keys.rules, "web", RULES.to_json())
    base = await redis_ms(r)
    await add(r, keys, *[result("web", base + i * INTERVAL, o) for i, o in enumerate(OUTAGE)])
    stalled = evaluator(r, keys, "ev-stalled")
    batch = await stalled.consumer.read(100, None)
    peer = evaluator(r, keys, "ev-peer", claim_idle_ms=0)
    await peer.sweep_claims()
    await stalled.evaluate(batch)
    # And the stalled one restarts under its name: its backlog is empty now.
    again = evaluator(r, keys, "ev-stalled")
    assert await again.consumer.read(100, None) == []
    ids = [e.id for e in await events(r, keys)]
    assert len(ids) == 8 == len(set(ids))


async def test_a_write_over_a_moved_state_is_refused_and_computed_again(r, keys, setup):
    """Two evaluators with results of one monitor: the second computed from the revision the
    first has just moved; apply.lua refuses it (nothing written, nothing acked) and the
    evaluator computes it again from the new state."""
    await r.hset(keys.rules, "web", RULES.to_json())
    base = await redis_ms(r)
    await add(r, keys, result("web", base, "up"), result("web", base + INTERVAL, "down"))
    one, two = evaluator(r, keys, "ev-1"), evaluator(r, keys, "ev-2")
    first, second = await one.consumer.read(1, None), await two.consumer.read(1, None)
    loaded = await two._load(["web"])  # ev-2 reads the state ...
    await one.evaluate(first)  # ... ev-1 moves it ...
    from evaluator.service import Applying
    from evaluator.state import Evaluation
    rev, state = loaded.states["web"]
    evaluation = Evaluation("web", state, RULES)
    assert rev == 0
    codes = await two._write([Applying(second[0].entry_id, "web", rev, state.to_json(),
                                       evaluation.step, {})])
    assert codes == [-1]  # ... so ev-2's write over revision 0 is refused
    assert len(await r.xpending_range(keys.results, EVALUATOR_GROUP, "-", "+", 10)) == 1
    await two.evaluate(second)  # computed again over revision 1
    assert (await state_of(r, keys, "web")).regions["eu"].length == 1  # down, once
    assert len(await r.xpending_range(keys.results, EVALUATOR_GROUP, "-", "+", 10)) == 0


async def test_a_silent_region_turns_unknown_at_its_deadline(r, keys, setup):
    rules = replace(RULES, stale_after_ms=1_000)
    await r.hset(keys.rules, "web", rules.to_json())
    now = await redis_ms(r)
    await add(r, keys, result("web", now - 10_000, "up"))
    ev = evaluator(r, keys)
    await ev.evaluate(await ev.consumer.read(10, None))
    assert await r.zscore(keys.stale, member("web", "eu")) == now - 10_000 + 1_000
    assert await ev.sweep_stale() == 1
    stale = (await events(r, keys))[-3:]
    assert [(e.type, e.status, e.at_ms) for e in stale] == [
        ("status.changed", "unknown", now - 9_000),
        ("monitoring.degraded", "unknown", now - 9_000),
        ("monitor.changed", "unknown", now - 9_000)]
    assert await r.zscore(keys.stale, member("web", "eu")) is None
    assert await ev.sweep_stale() == 0  # once


async def test_a_backlog_of_unread_results_is_not_silence(r, keys, setup):
    """After an outage of the evaluator the results are waiting in the stream: the sweep
    judges only up to the oldest of them."""
    rules = replace(RULES, stale_after_ms=1_000)
    await r.hset(keys.rules, "web", rules.to_json())
    now = await redis_ms(r)
    await add(r, keys, result("web", now - 10_000, "up"), result("web", now - 9_500, "up"))
    ev = evaluator(r, keys)
    await ev.evaluate(await ev.consumer.read(1, None))  # then the evaluator stops a while
    assert await ev.evaluated_through() == now - 9_500 + 3
    assert await ev.sweep_stale() == 0
    await ev.evaluate(await ev.consumer.read(10, None))
    assert [e.type for e in await events(r, keys)] == ["status.changed", "monitor.changed"]


async def test_a_paused_monitor_is_not_silent(r, keys, setup):
    rules = replace(RULES, stale_after_ms=1_000)
    await r.hset(keys.rules, "web", rules.to_json())
    now = await redis_ms(r)
    await add(r, keys, result("web", now - 10_000, "up"))
    ev = evaluator(r, keys)
    await ev.evaluate(await ev.consumer.read(10, None))
    await r.hset(keys.maintenance, "web", f"pause:{now + 60_000}")
    assert await ev.sweep_stale() == 1  # its deadline moved on
    assert [e.type for e in await events(r, keys)] == ["status.changed", "monitor.changed"]
    assert await r.zscore(keys.stale, member("web", "eu")) > now


async def test_bad_results_are_dead_lettered_and_unknown_monitors_acknowledged(r, keys, setup):
    await r.xadd(keys.results, {EVENT_FIELD: b'{"type": "check.result", "v": 1}'})
    await add(r, keys, result("gone", await redis_ms(r), "down"))
    ev = evaluator(r, keys)
    await ev.evaluate(await ev.consumer.read(10, None))
    assert await r.xlen(keys.deadletter) == 1
    assert await events(r, keys) == []
    assert (await r.xpending(keys.results, EVALUATOR_GROUP))["pending"] == 0


async def test_the_service_evaluates_as_results_arrive(r, keys, setup):
    await r.hset(keys.rules, "web", RULES.to_json())
    base = await redis_ms(r)
    ev = evaluator(r, keys)
    async with running(ev):
        await add(r, keys, *[result("web", base + i * INTERVAL, o)
                             for i, o in enumerate(OUTAGE)])

        async def resolved() -> bool:
            return any(e.type == "incident.resolved" for e in await events(r, keys))
        await wait_for(resolved)
    assert len(await events(r, keys)) == 8
    consumer = Consumer(r, keys.results, EVALUATOR_GROUP, "ev-1")
    assert await consumer.read(10, None) == []


async def test_a_removed_monitor_resolves_its_open_incident(r, keys, setup):
    """Every alert sent gets its resolve: also when the monitor goes away while down."""
    await r.hset(keys.rules, "web", RULES.to_json())
    base = await redis_ms(r) - 60_000
    await add(r, keys, *[result("web", base + i * INTERVAL, o)
                         for i, o in enumerate(["up", "down", "down"])])
    ev = evaluator(r, keys)
    await ev.evaluate(await ev.consumer.read(10, None))
    assert (await state_of(r, keys, "web")).incident is not None
    await r.hdel(keys.rules, "web")  # the scheduler's sync removed it
    assert await ev.sweep_stale() == 1
    resolved = (await events(r, keys))[-1]
    assert (resolved.type, resolved.reason) == ("incident.resolved",
                                                "the monitor was removed or paused")
    assert await r.zcard(keys.stale) == 0
    assert (await state_of(r, keys, "web")).regions == {}


async def test_a_sweep_takes_batch_after_batch(r, keys, setup):
    """A region's executors all gone at once: every monitor turns unknown in one sweep, not
    500 a second."""
    rules = replace(RULES, stale_after_ms=1_000)
    ids = [f"m{i}" for i in range(1_200)]
    await r.hset(keys.rules, mapping={mid: rules.to_json() for mid in ids})
    now = await redis_ms(r)
    await add(r, keys, *[result(mid, now - 10_000, "up") for mid in ids])
    ev = evaluator(r, keys)
    while batch := await ev.consumer.read(500, None):
        await ev.evaluate(batch)
    assert await r.zcard(keys.stale) == 1_200
    assert await ev.sweep_stale() == 1_200
    assert await r.zcard(keys.stale) == 0


async def test_a_dependency_in_another_shard_is_read_there(r):
    """Of three shards, `uplink` lives in shard 2 and `web`, which depends on it, in shard 1:
    web's evaluator reads uplink's confirmed state from uplink's own shard."""
    uplink_keys, web_keys = Keys("2"), Keys("1")
    for keys in (uplink_keys, web_keys):
        for group in RESULT_GROUPS:
            await ensure_group(r, keys.results, group)
        for group in EVENT_GROUPS:
            await ensure_group(r, keys.events, group)
    await r.hset(uplink_keys.rules, "uplink", RULES.to_json())
    await r.hset(web_keys.rules, "web", replace(RULES, depends_on=("uplink",)).to_json())
    settings = Settings(shards=3, instance_id="ev-shards")
    base = await redis_ms(r)
    await add(r, uplink_keys, *[result("uplink", base + i * INTERVAL, "down") for i in range(2)])
    upstream = Evaluator(r, uplink_keys, settings)
    await upstream.evaluate(await upstream.consumer.read(100, None))
    assert (await state_of(r, uplink_keys, "uplink")).status == "down"

    loaded = await Evaluator(r, web_keys, settings)._load(["web"])
    assert loaded.dependencies["uplink"].status == "down"
