"""The executor on a real redis-server: checks, claims, dead letters, expiry, drain."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import orjson
import pytest
from aiohttp import web

from engine import registry
from engine.clock import RedisClock, redis_ms
from engine.connections import redis_client
from engine.events import DUE_VERSION, CheckResult
from engine.keys import EXECUTOR_GROUP
from engine.settings import Settings
from engine.streams import EVENT_FIELD, ensure_group, event_of
from executors.admission import Slot
from executors.service import Executor
from tests.support.helpers import free_port, running, wait_for
from tests.support.kind_executor import check_due
from tests.support.servers import serve_app
from vigil.embedded import RedisServer

DEAD_LETTER_FIELDS = {b"stream", b"id", b"reason", b"payload", b"at"}
SETTINGS = Settings(max_timeout_ms=1_000, claim_grace_ms=200, instance_id="exec-a",
                    max_deliveries=2)


def due(monitor_id: str, spec: dict, *, late_ms: int = 0, interval_ms: int = 10_000,
        timeout_ms: int = 800) -> bytes:
    """A check.due for the kind's settings given as {kind: settings}."""
    [(kind, settings)] = spec.items()
    return check_due(monitor_id, kind, settings, timeout_ms=timeout_ms, interval_ms=interval_ms,
                     scheduled_ms=int(time.time() * 1000) - late_ms).to_json()


async def results(r, keys) -> dict[str, CheckResult]:
    out = {}
    for _, fields in await r.xrange(keys.results):
        result = CheckResult.from_json(event_of(fields))
        assert result.monitor_id not in out, "two results for one check"
        out[result.monitor_id] = result
    return out


async def run_until(executor: Executor, r, keys, count: int, timeout: float = 10):
    stop = asyncio.Event()
    task = asyncio.create_task(executor.run(stop))

    async def enough() -> bool:
        return await r.xlen(keys.results) >= count

    try:
        await wait_for(enough, timeout=timeout)
    finally:
        stop.set()
        await task
    return await results(r, keys)


async def work_off(executor: Executor) -> None:
    """Run, here and one by one, the checks an executor that is not running has admitted,
    and write their results."""
    while (work := executor._ready.pop()) is not None:
        await executor._process(Slot(), work)
        executor._ready.done(work)
    for lane in executor.lanes:
        await lane.flush()


def named(r, keys, *names: str) -> list[Executor]:
    """Executors with SETTINGS, one per instance id."""
    return [Executor(r, keys, replace(SETTINGS, instance_id=name)) for name in names]


async def pending(r, keys) -> int:
    return int((await r.xpending(keys.checks("default"), EXECUTOR_GROUP))["pending"])


async def test_runs_http_and_tcp_checks(r, keys, target):
    stream = keys.checks("default")
    await ensure_group(r, stream, EXECUTOR_GROUP)
    for mid, spec in {
        "ok": {"http": {"url": f"{target}/ok"}},
        "fail": {"http": {"url": f"{target}/fail"}},
        "slow": {"http": {"url": f"{target}/slow"}},
        "closed": {"tcp": {"host": "127.0.0.1", "port": 9}},
        "open": {"tcp": {"host": target.split("//")[1].split(":")[0],
                         "port": int(target.rsplit(":", 1)[1])}},
        "nodns": {"http": {"url": "http://no-such-host.invalid/"}},
    }.items():
        await r.xadd(stream, {EVENT_FIELD: due(mid, spec)})
    got = await run_until(Executor(r, keys, SETTINGS), r, keys, 6)
    assert got["ok"].outcome == "up"
    assert got["ok"].status_code == 200
    assert got["ok"].latency_ms is not None
    assert (got["fail"].outcome, got["fail"].status_code, got["fail"].error_kind) == (
        "down", 500, "status")
    assert (got["slow"].outcome, got["slow"].error_kind) == ("down", "timeout")
    assert (got["closed"].outcome, got["closed"].error_kind) == ("down", "connect")
    assert got["open"].outcome == "up"
    assert got["nodns"].outcome == "down"
    assert all(g.executor == "exec-a" and g.deliveries == 1 for g in got.values())
    assert await pending(r, keys) == 0


async def test_check_past_its_deadline_is_expired(r, keys, target):
    stream = keys.checks("default")
    await ensure_group(r, stream, EXECUTOR_GROUP)
    old = due("old", {"http": {"url": f"{target}/ok"}}, late_ms=20_000)
    await r.xadd(stream, {EVENT_FIELD: old})
    got = await run_until(Executor(r, keys, SETTINGS), r, keys, 1)
    assert got["old"].outcome == "expired"


async def test_claims_entry_left_by_a_vanished_consumer(r, keys, target):
    stream = keys.checks("default")
    await ensure_group(r, stream, EXECUTOR_GROUP)
    await r.xadd(stream, {EVENT_FIELD: due("orphan", {"http": {"url": f"{target}/ok"}})})
    # A consumer reads the entry, then dies without acknowledging it.
    assert await r.xreadgroup(EXECUTOR_GROUP, "vanished", {stream: ">"}, count=10)
    got = await run_until(Executor(r, keys, SETTINGS), r, keys, 1)
    assert got["orphan"].outcome == "up"
    assert got["orphan"].deliveries == 2
    assert await pending(r, keys) == 0


async def test_dead_letter_after_max_deliveries(r, keys, target):
    stream = keys.checks("default")
    await ensure_group(r, stream, EXECUTOR_GROUP)
    cursed = due("cursed", {"http": {"url": f"{target}/ok"}})
    await r.xadd(stream, {EVENT_FIELD: cursed})
    assert await r.xreadgroup(EXECUTOR_GROUP, "crash-1", {stream: ">"}, count=10)
    # Delivered to max_deliveries consumers that all crashed before acknowledging.
    for n in range(SETTINGS.max_deliveries - 1):
        await r.xclaim(stream, EXECUTOR_GROUP, f"crash-{n + 2}", 0, [
            (await r.xpending_range(stream, EXECUTOR_GROUP, "-", "+", 1))[0]["message_id"]])
    got = await run_until(Executor(r, keys, SETTINGS), r, keys, 1)
    assert got["cursed"].outcome == "error"
    assert got["cursed"].error_kind == "max_deliveries"
    assert got["cursed"].deliveries == SETTINGS.max_deliveries + 1
    [(_, letter)] = await r.xrange(keys.deadletter)
    assert set(letter) == DEAD_LETTER_FIELDS
    assert letter[b"stream"] == stream.encode()
    assert b"max_deliveries" in letter[b"reason"]
    assert letter[b"payload"] == cursed  # the entry's own check.due, to retry from
    assert await pending(r, keys) == 0


async def test_bad_event_is_dead_lettered_and_the_executor_goes_on(r, keys, target):
    stream = keys.checks("default")
    await ensure_group(r, stream, EXECUTOR_GROUP)
    await r.xadd(stream, {EVENT_FIELD: b"{not json"})
    await r.xadd(stream, {EVENT_FIELD: orjson.dumps({"v": DUE_VERSION, "type": "check.due"})})
    await r.xadd(stream, {EVENT_FIELD: due("fine", {"http": {"url": f"{target}/ok"}})})
    got = await run_until(Executor(r, keys, SETTINGS), r, keys, 1)
    assert got["fine"].outcome == "up"
    letters = await r.xrange(keys.deadletter)
    assert len(letters) == 2
    assert b"not JSON" in letters[0][1][b"reason"]
    assert b"check_id" in letters[1][1][b"reason"]
    # One shape whoever writes it (this one by DeadLetters, the one above by complete.lua).
    assert all(set(letter) == DEAD_LETTER_FIELDS for _, letter in letters)
    assert letters[0][1][b"payload"] == b"{not json"
    assert await pending(r, keys) == 0


async def test_invalid_spec_gives_an_error_result(r, keys):
    stream = keys.checks("default")
    await ensure_group(r, stream, EXECUTOR_GROUP)
    await r.xadd(stream, {EVENT_FIELD: due("weird", {"http": {"url": "not a url"}})})
    got = await run_until(Executor(r, keys, SETTINGS), r, keys, 1)
    assert (got["weird"].outcome, got["weird"].error_kind) == ("error", "spec")


@pytest.mark.timeout(30)
async def test_stop_drains_in_flight_checks(r, keys, target):
    stream = keys.checks("default")
    await ensure_group(r, stream, EXECUTOR_GROUP)
    settings = Settings(max_timeout_ms=5_000, instance_id="exec-drain")
    await r.xadd(stream, {EVENT_FIELD: due("slowish", {"http": {"url": f"{target}/slow"}},
                                   timeout_ms=4_000)})
    executor = Executor(r, keys, settings)
    stop = asyncio.Event()
    task = asyncio.create_task(executor.run(stop))

    async def running() -> bool:
        return await pending(r, keys) == 1

    await wait_for(running)
    stop.set()
    await task
    got = await results(r, keys)
    assert got["slowish"].outcome == "up"
    assert await pending(r, keys) == 0


@pytest.mark.parametrize("skew_ms", [150_000, -150_000])
async def test_expiry_is_judged_by_redis_time_not_the_hosts_clock(r, keys, target, skew_ms):
    """An executor whose clock is 150 s fast or slow: a check due now runs, one whose deadline
    passed 10 s ago (by Redis time) is `expired`, and the result's times are Redis time."""
    stream = keys.checks("default")
    await ensure_group(r, stream, EXECUTOR_GROUP)
    redis_now = await redis_ms(r)
    for name, scheduled in (("on-time", redis_now), ("late", redis_now - 20_000)):
        event = check_due(name, "http", {"url": f"{target}/ok"}, timeout_ms=800,
                          interval_ms=10_000, scheduled_ms=scheduled)
        await r.xadd(stream, {EVENT_FIELD: event.to_json()})
    skewed = RedisClock(r, local=lambda: time.time() * 1000 + skew_ms)
    got = await run_until(Executor(r, keys, SETTINGS, clock=skewed), r, keys, 2)
    assert (got["on-time"].outcome, got["late"].outcome) == ("up", "expired")
    assert redis_now <= got["on-time"].started_ms <= await redis_ms(r)


async def test_an_entry_completed_twice_yields_one_result(r, keys, target):
    """A slow executor and the peer that claimed its entry both finish the check: only the
    completion whose XACK removed the entry writes a result (complete.lua)."""
    stream = keys.checks("default")
    await ensure_group(r, stream, EXECUTOR_GROUP)
    await r.xadd(stream, {EVENT_FIELD: due("twice", {"http": {"url": f"{target}/ok"}})})
    slow, peer = named(r, keys, "exec-slow", "exec-peer")
    [held] = await slow.lanes[0].consumer.read(10, None)
    [claimed] = await peer.lanes[0].consumer.claim(0)
    for executor, delivery in ((peer, claimed), (slow, held)):
        [lane] = executor.lanes
        executor._admit(lane, delivery)
        await work_off(executor)
    [(_, fields)] = await r.xrange(keys.results)
    assert CheckResult.from_json(event_of(fields)).executor == "exec-peer"
    assert await pending(r, keys) == 0


async def steady(executor: Executor) -> None:
    """Beat until the executor has watched Redis steadily for a claim time (and may judge)."""

    async def watched() -> bool:
        await executor.heartbeat()
        return executor.lanes[0].steady.for_ms() >= executor.settings.claim_idle_ms

    await executor.clock.sync()
    await wait_for(watched)


async def test_a_live_peers_entry_is_never_claimed_however_long_it_is_idle(r, keys, target):
    """After a Redis outage a live executor's result waits to be written past the claim time;
    a peer that took the entry would find it past its deadline and record `expired` for a
    check that ran in time. The peer takes it only once its owner stops beating."""
    stream = keys.checks("default")
    await ensure_group(r, stream, EXECUTOR_GROUP)
    await r.xadd(stream, {EVENT_FIELD: due("waiting", {"http": {"url": f"{target}/ok"}})})
    owner, peer = named(r, keys, "exec-owner", "exec-peer")
    [held] = await owner.lanes[0].consumer.read(10, None)
    await r.xclaim(stream, EXECUTOR_GROUP, "exec-owner", 0, [held.entry_id], idle=60_000,
                   justid=True)
    await steady(peer)
    await owner.clock.sync()
    await owner.heartbeat()
    assert await peer.sweep() == 0
    now = await redis_ms(r)
    await registry.beat(r, keys, "exec-owner", "default", now - SETTINGS.claim_idle_ms - 1)
    assert await peer.sweep() == 1
    await work_off(peer)
    assert (await results(r, keys))["waiting"].executor == "exec-peer"


async def test_a_delivery_whose_reply_was_lost_is_run_by_its_own_executor(r, keys, target):
    """Redis delivered an entry to a running executor, then went away before the reply: the
    entry is in the executor's pending list and nobody runs it. The executor is alive, so no
    peer takes it; its own sweep does, once idle past the claim time, as its first run."""
    stream = keys.checks("default")
    await ensure_group(r, stream, EXECUTOR_GROUP)
    executor = Executor(r, keys, SETTINGS)
    async with running(executor):
        await steady(executor)
        async with r.pipeline(transaction=True) as pipe:  # before its blocked read sees it
            pipe.xadd(stream, {EVENT_FIELD: due("lost-reply", {"http": {"url": f"{target}/ok"}})})
            pipe.xreadgroup(EXECUTOR_GROUP, SETTINGS.instance_id, {stream: ">"})
            _, delivered = await pipe.execute()
        assert delivered

        async def recorded() -> bool:
            return await r.xlen(keys.results) >= 1

        await wait_for(recorded)
    got = await results(r, keys)
    assert (got["lost-reply"].outcome, got["lost-reply"].deliveries) == ("up", 1)
    assert await pending(r, keys) == 0


async def test_an_executor_judges_peers_only_after_watching_redis_for_a_claim_time(r, keys,
                                                                                 target):
    """Right after an outage every peer's last heartbeat is as old as the outage: an executor
    that is back first must not take them for dead before they could beat again."""
    stream = keys.checks("default")
    await ensure_group(r, stream, EXECUTOR_GROUP)
    await r.xadd(stream, {EVENT_FIELD: due("orphan", {"http": {"url": f"{target}/ok"}})})
    await r.xreadgroup(EXECUTOR_GROUP, "vanished", {stream: ">"}, count=10)
    await r.xclaim(stream, EXECUTOR_GROUP, "vanished", 0,
                   [(await r.xpending_range(stream, EXECUTOR_GROUP, "-", "+", 1))[0]["message_id"]],
                   idle=60_000, justid=True)
    [peer] = named(r, keys, "exec-peer")
    await peer.clock.sync()
    await peer.heartbeat()
    assert await peer.sweep() == 0  # reached Redis just now
    await steady(peer)
    assert await peer.sweep() == 1


async def test_results_held_through_a_redis_restart_are_the_owners(tmp_path, keys):
    """redis-server killed while an executor runs a check and restarted from its AOF after
    more than the claim time: the other executor leaves the entry to its owner, whose result
    (not an `expired` from a claim) is the one recorded."""
    server = RedisServer(tmp_path / "redis", port=free_port(), aof=True)
    server.start()
    r = redis_client(server.url)
    arrived = asyncio.Event()

    async def answer_later(_: web.Request) -> web.Response:
        arrived.set()
        await asyncio.sleep(0.3)  # the target's answer comes while Redis is away
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", answer_later)
    stream = keys.checks("default")
    try:
        async with serve_app(app) as base:
            await ensure_group(r, stream, EXECUTOR_GROUP)
            executors = named(r, keys, "exec-a", "exec-b")
            async with running(executors[0]), running(executors[1]):
                for executor in executors:
                    await steady(executor)
                await r.xadd(stream, {EVENT_FIELD: due("ran", {"http": {"url": f"{base}/"}})})
                await arrived.wait()
                [taken] = await r.xpending_range(stream, EXECUTOR_GROUP, "-", "+", 1)
                server.proc.kill()
                server.proc.wait()
                # The outage: longer than the claim time, so the entry is idle past it.
                await asyncio.sleep(2 * SETTINGS.claim_idle_ms / 1000)
                server.start()
                after = redis_client(server.url)  # the test's own client: no closed connections

                async def recorded() -> bool:
                    return await after.xlen(keys.results) >= 1

                async def both_watched() -> bool:
                    return all(e.lanes[0].steady.for_ms() >= SETTINGS.claim_idle_ms
                               for e in executors)

                await wait_for(recorded)
                await wait_for(both_watched)  # both could claim now, and neither does
                for executor in executors:
                    assert await executor.sweep() == 0
        got = await results(after, keys)
        await after.aclose()
        assert (got["ran"].outcome, got["ran"].executor) == ("up", taken["consumer"].decode())
        assert got["ran"].deliveries == 1
    finally:
        await r.aclose()
        server.stop()
