"""The queue's facts (engine.queue) and the operations API (api.queue) on a real redis-server:
the figures are the ones the test wrote (lengths, pending after a read without ack, lag);
dead letters are listed, retried onto their stream (and read by its group again) and purged;
pausing a region stops the real dispatch script sending it checks, resuming restarts it from
the next slot; every route wants an admin token."""

from __future__ import annotations

import redis.asyncio as aioredis

from engine import queue
from engine.keys import CLICKHOUSE_GROUP, EXECUTOR_GROUP, RESULT_GROUPS, Keys
from engine.streams import EVENT_FIELD, Consumer, ensure_group


async def test_stream_stats_are_what_was_written(r: aioredis.Redis, keys: Keys) -> None:
    checks = keys.checks("eu")
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
