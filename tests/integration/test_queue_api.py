"""The queue's facts (engine.queue) and the operations API (api.queue) on a real redis-server:
the figures are the ones the test wrote (lengths, pending after a read without ack, lag);
dead letters are listed, retried onto their stream (and read by its group again) and purged;
pausing a region stops the real dispatch script sending it checks, resuming restarts it from
the next slot; every route wants an admin token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from api import tokens
from engine import metrics, queue, registry
from engine.clickhouse import ClickHouse
from engine.clock import redis_ms
from engine.connections import redis_client
from engine.keys import CLICKHOUSE_GROUP, EXECUTOR_GROUP, RESULT_GROUPS, Keys
from engine.settings import Settings
from engine.shards import Layout
from engine.streams import EVENT_FIELD, Consumer, DeadLetters, ensure_group, event_of
from executors.service import Executor
from scheduler.dispatch import Dispatcher
from tests.integration.test_maintenance_dispatch import INTERVAL_MS, REGIONS, seed, sent
from tests.support.helpers import free_port
from tests.support.servers import api_client


async def test_stream_stats_are_what_was_written(r: aioredis.Redis, keys: Keys) -> None:
    checks = keys.checks("eu")
    await r.sadd(keys.regions, "eu")  # a plan names it (the sync keeps the set)
    await ensure_group(r, checks, EXECUTOR_GROUP)
    for group in RESULT_GROUPS:
        await ensure_group(r, keys.results, group)
    for i in range(5):
        await r.xadd(checks, {EVENT_FIELD: f"check {i}"})
    for i in range(3):
        await r.xadd(keys.results, {EVENT_FIELD: f"result {i}"})
    # Two read and not acknowledged: pending 2, lag 3.
    await Consumer(r, checks, EXECUTOR_GROUP, "exec-1").read_new(2)
    # The ClickHouse sink read everything and acknowledged one.
    sink = Consumer(r, keys.results, CLICKHOUSE_GROUP, "sink-1")
    read = await sink.read_new(10)
    await sink.ack(read[0].entry_id)

    streams = {s.name: s for s in await queue.stream_stats(r, keys)}

    assert set(streams) == {"checks:eu", "results", "events", "deadletter"}
    eu = streams["checks:eu"]
    assert (eu.key, eu.length) == (checks, 5)
    assert eu.oldest_age_ms is not None
    [executors] = eu.groups
    assert (executors.name, executors.role, executors.pending, executors.lag) == (
        EXECUTOR_GROUP, "executor", 2, 3)
    assert [(c.name, c.pending) for c in executors.consumers] == [("exec-1", 2)]
    assert executors.keeping_up
    results = {g.name: g for g in streams["results"].groups}
    assert streams["results"].length == 3
    assert (results[CLICKHOUSE_GROUP].pending, results[CLICKHOUSE_GROUP].lag) == (2, 0)
    assert results[CLICKHOUSE_GROUP].oldest_unread_age_ms == 0  # nothing unread
    assert (results["status"].pending, results["status"].lag) == (0, 3)
    assert results["evaluator"].role == "evaluator"
    # Not made yet: empty, no groups.
    assert (streams["events"].length, streams["events"].groups) == (0, ())
    assert streams["deadletter"].oldest_age_ms is None


async def test_oldest_unread_age_is_redis_time_since_the_entry(r: aioredis.Redis,
                                                               keys: Keys) -> None:
    checks = keys.checks("us")
    await r.sadd(keys.regions, "us")
    await ensure_group(r, checks, EXECUTOR_GROUP)
    now_ms = int((await r.time())[0]) * 1000
    # An entry id is its time: one written "two minutes ago" waited that long.
    await r.xadd(checks, {EVENT_FIELD: "old"}, id=f"{now_ms - 120_000}-0")
    [us] = [s for s in await queue.stream_stats(r, keys) if s.name == "checks:us"]
    [group] = us.groups
    assert group.oldest_unread_age_ms >= 120_000
    assert us.oldest_age_ms is not None
    assert us.oldest_age_ms >= 120_000
    assert not group.keeping_up


@pytest.fixture
async def admin(r: aioredis.Redis, pool: asyncpg.Pool, ch: ClickHouse,
                clean: None) -> AsyncIterator[TestClient]:
    """The API on a real port, every request carrying an admin token."""
    await pool.execute("TRUNCATE api_tokens")
    token = await tokens.create(pool, "test-admin", "admin")
    async with api_client(r, pool, ch, token=token) as c:
        yield c


async def _json(resp: ClientResponse, status: int = 200) -> Any:
    body = await resp.json()
    assert resp.status == status, body
    return body


async def test_stats_show_the_executors_of_each_region(admin: TestClient, r: aioredis.Redis,
                                                       keys: Keys) -> None:
    executor = Executor(r, keys, Settings(region="eu", instance_id="exec-eu", concurrency=7))
    await executor.heartbeat()
    now = await redis_ms(r)
    await registry.beat(r, keys, "exec-gone", "us", now - registry.ALIVE_MS - 1_000)

    body = await _json(await admin.get("/api/v1/queue/stats"))

    eu, us = body["executors"]["eu"], body["executors"]["us"]
    assert [(e["instance"], e["alive"], e["in_flight"], e["concurrency"]) for e in eu] == [
        ("exec-eu", True, 0, 7)]
    assert [(e["instance"], e["alive"]) for e in us] == [("exec-gone", False)]
    assert us[0]["heartbeat_age_ms"] > registry.ALIVE_MS
    assert {s["name"] for s in body["streams"]} >= {"results", "events", "deadletter"}
    assert (body["dead_letters"], body["paused"], body["keep_up_ms"]) == (0, {}, queue.KEEP_UP_MS)


async def test_health_names_the_role_behind_and_the_region_nobody_serves(
        admin: TestClient, r: aioredis.Redis, keys: Keys) -> None:
    for group in RESULT_GROUPS:
        await ensure_group(r, keys.results, group)
    await ensure_group(r, keys.checks("eu"), EXECUTOR_GROUP)
    await registry.beat(r, keys, "exec-eu", "eu", await redis_ms(r))
    assert await _json(await admin.get("/api/v1/queue/health")) == {
        "healthy": True, "problems": [], "paused": {}, "keep_up_ms": queue.KEEP_UP_MS,
        "roles": [{"role": "executor", "stream": "checks:eu", "group": EXECUTOR_GROUP,
                   "keeping_up": True, "oldest_unread_age_ms": 0, "lag": 0}] + [
            {"role": role, "stream": "results", "group": group, "keeping_up": True,
             "oldest_unread_age_ms": 0, "lag": 0}
            # Redis lists a stream's groups by name.
            for group, role in (("clickhouse", "sink-clickhouse"), ("evaluator", "evaluator"),
                                ("status", "sink-status"))]}

    now = await redis_ms(r)
    # A result waiting two minutes for every sink; a region with a check and no executor.
    await r.xadd(keys.results, {EVENT_FIELD: "late"}, id=f"{now - 120_000}-0")
    await r.sadd(keys.regions, "mars")  # a plan names a region no executor serves
    await ensure_group(r, keys.checks("mars"), EXECUTOR_GROUP)
    await r.xadd(keys.checks("mars"), {EVENT_FIELD: "due"})

    body = await _json(await admin.get("/api/v1/queue/health"), 503)

    assert not body["healthy"]
    behind = [p for p in body["problems"] if "is behind" in p]
    assert len(behind) == len(RESULT_GROUPS)
    assert behind[0].startswith("sink-clickhouse is behind: the oldest entry group "
                                "'clickhouse' has not read on results waited 1")
    assert "region 'mars': checks are waiting and no executor is alive" in body["problems"][-1]
    assert not any("'eu'" in p for p in body["problems"])


async def test_dead_letters_are_listed_retried_onto_their_stream_and_purged(
        admin: TestClient, r: aioredis.Redis, keys: Keys) -> None:
    checks = keys.checks("eu")
    await ensure_group(r, checks, EXECUTOR_GROUP)
    dead = DeadLetters(r, keys.deadletter)
    for i in range(3):
        await dead.add(checks, f"1-{i}".encode(), f'{{"n":{i}}}'.encode(), f"broken {i}")

    page = await _json(await admin.get("/api/v1/queue/dead-letters?limit=2"))
    assert page["count"] == 3
    assert [(d["stream"], d["entry_id"], d["reason"], d["payload"])
            for d in page["dead_letters"]] == [(checks, "1-0", "broken 0", '{"n":0}'),
                                               (checks, "1-1", "broken 1", '{"n":1}')]
    assert page["dead_letters"][0]["at_ms"] > 0
    rest = await _json(await admin.get(f"/api/v1/queue/dead-letters?after={page['next']}"))
    assert ([d["reason"] for d in rest["dead_letters"]], rest["next"]) == (["broken 2"], None)

    first = page["dead_letters"][0]["id"]
    assert await _json(await admin.post(f"/api/v1/queue/dead-letters/{first}/retry")) == {
        "retried": 1}
    # Back on its stream as a new entry, which the group reads again; no longer a dead letter.
    [again] = await Consumer(r, checks, EXECUTOR_GROUP, "exec-1").read_new(10)
    assert event_of(again.fields) == b'{"n":0}'
    assert await dead.count() == 2
    await _json(await admin.post(f"/api/v1/queue/dead-letters/{first}/retry"), 404)

    second = page["dead_letters"][1]["id"]
    assert await _json(await admin.delete(f"/api/v1/queue/dead-letters?id={second}")) == {
        "purged": 1}
    await _json(await admin.delete(f"/api/v1/queue/dead-letters?id={second}"), 404)
    assert await _json(await admin.post("/api/v1/queue/dead-letters/retry")) == {"retried": 1}
    assert [event_of(d.fields) for d in await Consumer(r, checks, EXECUTOR_GROUP,
                                                       "exec-1").read_new(10)] == [b'{"n":2}']
    await dead.add(checks, b"1-9", b"{}", "again")
    assert await _json(await admin.delete("/api/v1/queue/dead-letters")) == {"purged": 1}
    assert await dead.count() == 0


async def test_the_view_and_the_actions_span_every_shard(
        r: aioredis.Redis, pool: asyncpg.Pool, ch: ClickHouse, clean: None) -> None:
    """Two shards: the stats list both shards' streams, an executor serving both is listed
    once, counters add up, a pause reaches both schedulers' shards; dead letters are a
    shard's, named by `?shard=`."""
    await pool.execute("TRUNCATE api_tokens")
    token = await tokens.create(pool, "test-admin", "admin")
    layout = Layout.of(2, ["0", "1"])
    now = await redis_ms(r)
    for keys in layout.all:
        await r.sadd(keys.regions, "eu")
        await ensure_group(r, keys.checks("eu"), EXECUTOR_GROUP)
        await r.xadd(keys.checks("eu"), {EVENT_FIELD: "due"})
        await r.hset(keys.stats, "dispatched", 3)
        await registry.beat(r, keys, "exec-both", "eu", now)
    await DeadLetters(r, Keys("1").deadletter).add(Keys("1").checks("eu"), b"1-0", b"{}", "bad")
    async with api_client(r, pool, ch, layout, token=token) as admin:
        stats = await _json(await admin.get("/api/v1/queue/stats"))
        assert sorted((s["shard"], s["key"]) for s in stats["streams"]
                      if s["name"] == "checks:eu") == [("0", Keys("0").checks("eu")),
                                                      ("1", Keys("1").checks("eu"))]
        assert [e["instance"] for e in stats["executors"]["eu"]] == ["exec-both"]
        assert (stats["dispatch"], stats["dead_letters"]) == ({"dispatched": 6}, 1)

        paused = await _json(await admin.post("/api/v1/queue/pause?region=eu"))
        assert list(paused["paused"]) == ["eu"]
        for keys in layout.all:
            assert list(await queue.paused(r, keys)) == ["eu"]
        await _json(await admin.post("/api/v1/queue/resume"))
        assert not any([await queue.paused(r, keys) for keys in layout.all])

        assert (await _json(await admin.get("/api/v1/queue/dead-letters")))["count"] == 0
        one = await _json(await admin.get("/api/v1/queue/dead-letters?shard=1"))
        assert [d["reason"] for d in one["dead_letters"]] == ["bad"]
        body = await _json(await admin.get("/api/v1/queue/dead-letters?shard=7"), 422)
        assert "shard" in str(body)


async def test_a_retry_puts_a_dead_letter_back_once(r: aioredis.Redis, keys: Keys) -> None:
    """Two operators retrying the same dead letters at once: each goes back once."""
    checks = keys.checks("eu")
    dead = DeadLetters(r, keys.deadletter)
    for i in range(50):
        await dead.add(checks, f"1-{i}".encode(), b"{}", "broken")
    ids = [d.id for d in await dead.page(50)]
    done = await asyncio.gather(dead.retry(*ids), DeadLetters(r, keys.deadletter).retry(*ids),
                                dead.retry_all())
    assert sum(done) == 50
    assert (await r.xlen(checks), await dead.count()) == (50, 0)


async def test_bad_queries_name_the_field(admin: TestClient) -> None:
    for path, field in (("/api/v1/queue/dead-letters?limit=0", "limit"),
                        ("/api/v1/queue/dead-letters?after=x", "after"),
                        (f"/api/v1/queue/dead-letters?after={2**63}-0", "after")):
        body = await _json(await admin.get(path), 422)
        assert [e["field"] for e in body["errors"]] == [field], path
    body = await _json(await admin.post("/api/v1/queue/dead-letters/1-x/retry"), 422)
    assert body["errors"][0]["field"] == "entry_id"
    body = await _json(await admin.post("/api/v1/queue/pause?region=a%20b"), 422)
    assert body["errors"][0]["field"] == "region"


async def test_pause_stops_dispatch_to_a_region_and_resume_restarts_it(
        admin: TestClient, r: aioredis.Redis, keys: Keys) -> None:
    dispatcher = Dispatcher(r, keys)
    scheduler_metrics = metrics.registry_of(["scheduler"])
    held_before = scheduler_metrics.get_sample_value("vigil_checks_held_total") or 0
    now = await redis_ms(r)
    await seed(r, keys, "db", now - 1)
    paused = await _json(await admin.post("/api/v1/queue/pause?region=eu"))
    assert set(paused["paused"]) == {"eu"}

    assert (await dispatcher.dispatch())[0] == 1  # us only
    assert ([len(await sent(r, keys, region)) for region in REGIONS]) == [0, 1]
    assert int(await r.hget(keys.stats, "held") or 0) == 1
    assert scheduler_metrics.get_sample_value("vigil_checks_held_total") == held_before + 1
    stats = await _json(await admin.get("/api/v1/queue/stats"))
    assert (set(stats["paused"]), stats["dispatch"]["held"]) == ({"eu"}, 1)

    # Every region paused: the next slot sends nothing, and moves on all the same.
    await _json(await admin.post("/api/v1/queue/pause"))
    await r.zadd(keys.due, {"db": now - 1 + INTERVAL_MS - 2 * INTERVAL_MS})
    assert (await dispatcher.dispatch())[0] == 0
    assert await r.zscore(keys.due, "db") == now - 1 + INTERVAL_MS

    # Resumed with slots missed meanwhile: the next slot goes, the missed ones are not sent.
    assert await _json(await admin.post("/api/v1/queue/resume")) == {"paused": {}}
    await r.zadd(keys.due, {"db": await redis_ms(r) - 3 * INTERVAL_MS - 1})
    dispatched, skipped, *_ = await dispatcher.dispatch()
    assert (dispatched, skipped) == (2, 3)
    assert [len(await sent(r, keys, region)) for region in REGIONS] == [1, 2]


async def test_a_region_resumed_stays_paused_while_every_region_is(admin: TestClient) -> None:
    await _json(await admin.post("/api/v1/queue/pause?region=eu"))
    await _json(await admin.post("/api/v1/queue/pause"))
    assert set((await _json(await admin.post("/api/v1/queue/resume?region=eu")))["paused"]) == {
        queue.ALL_REGIONS}


ROUTES = (("GET", "/api/v1/queue/stats"), ("GET", "/api/v1/queue/health"),
          ("GET", "/api/v1/queue/dead-letters"), ("DELETE", "/api/v1/queue/dead-letters"),
          ("POST", "/api/v1/queue/dead-letters/retry"),
          ("POST", "/api/v1/queue/dead-letters/1-0/retry"), ("POST", "/api/v1/queue/pause"),
          ("POST", "/api/v1/queue/resume"))


async def test_every_route_wants_an_admin_token(client: TestClient, pool: asyncpg.Pool) -> None:
    await pool.execute("TRUNCATE api_tokens")
    writer = await tokens.create(pool, "writer", "write")
    for method, path in ROUTES:
        resp = await client.request(method, path)
        assert resp.status == 401, (method, path)
        resp = await client.request(method, path, headers={"Authorization": f"Bearer {writer}"})
        assert (resp.status, (await resp.json())["needed_scope"]) == (403, "admin"), path


async def test_every_route_is_in_the_openapi_document(client: TestClient) -> None:
    paths = (await (await client.get("/openapi.json")).json())["paths"]
    routes = {(route.method.lower(), route.resource.canonical)
              for route in client.app.router.routes()
              if route.resource is not None and route.resource.canonical.startswith(
                  "/api/v1/queue") and route.method != "HEAD"}
    assert {(m, p) for m, p in routes if m in paths.get(p, {})} == routes
    assert len(routes) == len(ROUTES)
    listing = paths["/api/v1/queue/dead-letters"]["get"]
    assert "scope admin" in listing["description"]


async def test_who_paused_is_logged_and_a_scheduler_starting_paused_says_so(
        admin: TestClient, r: aioredis.Redis, keys: Keys) -> None:
    with capture_logs() as logs:
        await _json(await admin.post("/api/v1/queue/pause?region=eu"))
        await Dispatcher(r, keys).warn_if_paused()
    assert [(e["event"], e.get("token"), e.get("region"), e.get("paused")) for e in logs
            if e["event"].startswith("dispatch")] == [
        ("dispatch paused", "test-admin", "eu", None),
        ("dispatch is paused by an operator; checks are held until vigil queue resume",
         None, None, ["eu"])]


async def test_redis_away_is_a_503_and_one_warning(pool: asyncpg.Pool, ch: ClickHouse,
                                                   clean: None) -> None:
    await pool.execute("TRUNCATE api_tokens")
    token = await tokens.create(pool, "test-admin", "admin")
    away = redis_client(f"redis://127.0.0.1:{free_port()}/0")
    try:
        async with api_client(away, pool, ch, token=token) as c:
            with capture_logs() as logs:
                for method, path in ROUTES:
                    resp = await c.request(method, path)
                    assert (resp.status, await resp.json()) == (
                        503, {"error": "Redis cannot be reached; retry"}), path
    finally:
        await away.aclose()
    assert [e["log_level"] for e in logs if "reaching Redis" in e["event"]] == ["warning"]
