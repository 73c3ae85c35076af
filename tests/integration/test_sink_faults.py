"""The ClickHouse sink against a server that fails the way ClickHouse servers fail (a fault
injector in front of the session's chDB): a server or resource error is an outage, retried
until it passes, with nothing dead-lettered; only an error about the rows splits the batch."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from engine.clickhouse import ClickHouse
from engine.events import CheckResult, check_id
from engine.keys import CLICKHOUSE_GROUP, STATUS_GROUP
from engine.settings import Settings
from engine.streams import EVENT_FIELD, ensure_group
from sinks.clickhouse import ClickHouseSink
from tests.support.clickhouse_front import clickhouse_front
from tests.support.helpers import wait_for

SETTINGS = Settings(sink_batch_size=500, sink_flush_ms=50, instance_id="sink-faults")
T0 = 1_800_000_000_000


async def publish(r, keys, count: int) -> None:
    for group in (CLICKHOUSE_GROUP, STATUS_GROUP):
        await ensure_group(r, keys.results, group)
    for i in range(count):
        scheduled = T0 + i * 1_000
        result = CheckResult(check_id=check_id(f"m{i % 20}", "default", scheduled),
                             monitor_id=f"m{i % 20}", region="default", scheduled_ms=scheduled,
                             started_ms=scheduled + 1, finished_ms=scheduled + 9, outcome="up",
                             latency_ms=8.0)
        await r.xadd(keys.results, {EVENT_FIELD: result.to_json()})


async def drained(r, keys) -> bool:
    info = {g["name"].decode(): g for g in await r.xinfo_groups(keys.results)}
    last = (await r.xinfo_stream(keys.results))["last-generated-id"]
    group = info[CLICKHOUSE_GROUP]
    return group["pending"] == 0 and group["last-delivered-id"] == last


async def rows(ch: ClickHouse) -> tuple[int, int]:
    [(count, unique)] = await ch.rows("SELECT count(), uniqExact(check_id) FROM check_results")
    return count, unique


@pytest.mark.parametrize(("code", "text"), [
    (252, "Too many parts (3001) in all partitions in total in table 'default.check_results'"),
    (241, "Memory limit (total) exceeded: would use 9.31 GiB, maximum: 9.31 GiB"),
    (159, "Timeout exceeded: elapsed 30.0 seconds, maximum: 30"),
    (242, "Table is in readonly mode (replica path: /clickhouse/tables/01/check_results)"),
    (210, "Connection refused (server is shutting down)"),
])
async def test_a_server_error_is_an_outage_and_loses_nothing(r, keys, ch, clean, tmp_path: Path,
                                                            code: int, text: str):
    await publish(r, keys, 200)
    async with clickhouse_front(ch, tmp_path) as (front, url):
        front.failing = (code, text)
        server = await asyncio.to_thread(ClickHouse.from_url, url)
        stop = asyncio.Event()
        task = asyncio.create_task(ClickHouseSink(r, keys, SETTINGS, ch=server).run(stop))
        try:
            async def refused_twice() -> bool:
                return front.refused >= 2

            await wait_for(refused_twice)
            front.failing = None  # the server is back
            await wait_for(lambda: drained(r, keys), timeout=30)
        finally:
            stop.set()
            await task
            await server.close()
    assert await rows(ch) == (200, 200)
    assert await r.xlen(keys.deadletter) == 0


async def test_an_error_about_the_rows_splits_the_batch(r, keys, ch, clean, tmp_path: Path):
    await publish(r, keys, 8)
    async with clickhouse_front(ch, tmp_path) as (front, url):
        front.failing = (27, "Cannot parse input: expected '\\t' before: 'x'")
        server = await asyncio.to_thread(ClickHouse.from_url, url)
        stop = asyncio.Event()
        task = asyncio.create_task(ClickHouseSink(r, keys, SETTINGS, ch=server).run(stop))
        try:
            await wait_for(lambda: drained(r, keys), timeout=30)
        finally:
            stop.set()
            await task
            await server.close()
    # Split down to single results, each refused: every one is dead-lettered, none lost.
    assert await r.xlen(keys.deadletter) == 8
    assert front.refused == 8 + 4 + 2 + 1


async def test_a_batch_in_a_long_retry_is_not_claimed_and_written_twice(r, keys, ch, clean,
                                                                         tmp_path: Path):
    """The outage outlasts the claim idle time: neither this sink's sweep nor a peer's may take
    the batch it is still retrying."""
    quick = Settings(sink_batch_size=500, sink_flush_ms=50, max_timeout_ms=200,
                     claim_grace_ms=100, instance_id="sink-retrying")
    await publish(r, keys, 100)
    async with clickhouse_front(ch, tmp_path) as (front, url):
        front.failing = (252, "Too many parts (3001)")
        server = await asyncio.to_thread(ClickHouse.from_url, url)
        stop = asyncio.Event()
        sinks = [ClickHouseSink(r, keys, quick, ch=server),
                 ClickHouseSink(r, keys, replace(quick, instance_id="sink-peer"), ch=server)]
        tasks = [asyncio.create_task(sink.run(stop)) for sink in sinks]
        try:
            async def refused_long_enough() -> bool:
                return front.refused >= 4  # 0.2 + 0.4 + 0.8 s of backoff: past the 0.3 s idle

            await wait_for(refused_long_enough)
            front.failing = None
            await wait_for(lambda: drained(r, keys), timeout=30)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            await server.close()
    [(inserted,)] = await ch.rows("SELECT count() FROM check_results")  # without FINAL
    assert inserted == 100
