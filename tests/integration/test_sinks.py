"""Both sinks on real Redis, Postgres and chDB: batches, idempotence, crash recovery."""

from __future__ import annotations

import time

from engine.keys import CLICKHOUSE_GROUP, STATUS_GROUP
from engine.settings import Settings
from engine.streams import EVENT_FIELD, ensure_group, safe_trim
from sinks.clickhouse import ClickHouseSink
from sinks.status import StatusSink
from tests.support.helpers import check_result, running, wait_for

SETTINGS = Settings(sink_batch_size=100, sink_flush_ms=50, max_timeout_ms=200,
                    claim_grace_ms=100, instance_id="sink-a")
# Within check_results' 400-day TTL, so no merge drops what a test wrote.
T0 = int(time.time()) * 1000 - 3_600_000


async def publish(r, keys, results):
    for group in (CLICKHOUSE_GROUP, STATUS_GROUP):
        await ensure_group(r, keys.results, group)
    for res in results:
        await r.xadd(keys.results, {EVENT_FIELD: res.to_json()})


async def run_sink(sink, r, keys, group: str, timeout: float = 10) -> None:
    async def drained() -> bool:
        info = {g["name"].decode(): g for g in await r.xinfo_groups(keys.results)}
        last = (await r.xinfo_stream(keys.results))["last-generated-id"]
        return info[group]["pending"] == 0 and info[group]["last-delivered-id"] == last

    async with running(sink):
        await wait_for(drained, timeout=timeout)


async def counts(ch) -> tuple[int, int, int]:
    [(rows, unique)] = await ch.rows("SELECT count(), uniqExact(check_id) FROM check_results FINAL")
    dupes = await ch.rows("SELECT check_id FROM check_results FINAL GROUP BY check_id "
                          "HAVING count() > 1")
    return rows, unique, len(dupes)


async def test_clickhouse_sink_writes_every_result_once(r, keys, ch, clean):
    batch = [check_result(f"m{i % 10}", T0 + i * 1000, "up" if i % 3 else "down")
             for i in range(250)]
    await publish(r, keys, batch)
    await run_sink(ClickHouseSink(r, keys, SETTINGS, ch=ch), r, keys, CLICKHOUSE_GROUP)
    assert await counts(ch) == (250, 250, 0)
    # Replaying the same results (a redelivery) adds no row that counts.
    await publish(r, keys, batch[:100])
    await run_sink(ClickHouseSink(r, keys, SETTINGS, ch=ch), r, keys, CLICKHOUSE_GROUP)
    assert await counts(ch) == (250, 250, 0)


async def test_crash_between_insert_and_ack_causes_no_duplicate(r, keys, ch, clean):
    batch = [check_result(f"m{i}", T0 + i) for i in range(40)]
    await publish(r, keys, batch)
    crashed = ClickHouseSink(r, keys, Settings(instance_id="sink-crashed"), ch=ch)
    entries = await crashed.consumer.read(100, 100)
    assert len(entries) == 40
    # The crashed sink inserted its batch, then died before XACK.
    await crashed.write([res for _, res in await crashed._decode(entries)])
    assert await counts(ch) == (40, 40, 0)
    # Its successor claims the stalled entries and writes them again.
    await run_sink(ClickHouseSink(r, keys, SETTINGS, ch=ch), r, keys, CLICKHOUSE_GROUP)
    assert await counts(ch) == (40, 40, 0)
    pending = await r.xpending(keys.results, CLICKHOUSE_GROUP)
    assert pending["pending"] == 0


async def test_bad_result_is_dead_lettered(r, keys, ch, clean):
    await publish(r, keys, [check_result("good", T0)])
    await r.xadd(keys.results, {EVENT_FIELD: b'{"v":1,"type":"check.result","outcome":"maybe"}'})
    await run_sink(ClickHouseSink(r, keys, SETTINGS, ch=ch), r, keys, CLICKHOUSE_GROUP)
    assert await counts(ch) == (1, 1, 0)
    [(_, letter)] = await r.xrange(keys.deadletter)
    assert b"outcome" in letter[b"reason"]


async def test_status_sink_moves_only_forward(r, keys, pool, clean, postgres_dsn):
    sink = StatusSink(r, keys, SETTINGS, postgres_dsn=postgres_dsn)
    await publish(r, keys, [check_result("web", T0 + 2000, "down", error_kind="connect"),
                            check_result("web", T0 + 1000, "up"),
                            check_result("web", T0 + 3000, "expired"),
                            check_result("api", T0, "up")])
    await run_sink(sink, r, keys, STATUS_GROUP)
    rows = {r_["monitor_id"]: r_ for r_ in await pool.fetch("SELECT * FROM monitor_status")}
    assert rows["web"]["status"] == "down"
    assert rows["web"]["scheduled_ms"] == T0 + 2000
    assert rows["web"]["since_ms"] == T0 + 2000
    assert rows["api"]["status"] == "up"
    # Older and replayed results change nothing; a newer one with the same status keeps `since`.
    await publish(r, keys, [check_result("web", T0 + 1500, "up"),
                            check_result("web", T0 + 2000, "up"),
                            check_result("web", T0 + 4000, "down", error_kind="connect")])
    await run_sink(StatusSink(r, keys, SETTINGS, postgres_dsn=postgres_dsn), r, keys,
                   STATUS_GROUP)
    web = await pool.fetchrow("SELECT * FROM monitor_status WHERE monitor_id = 'web'")
    assert (web["status"], web["scheduled_ms"], web["since_ms"]) == ("down", T0 + 4000, T0 + 2000)
    await publish(r, keys, [check_result("web", T0 + 5000, "up")])
    await run_sink(StatusSink(r, keys, SETTINGS, postgres_dsn=postgres_dsn), r, keys,
                   STATUS_GROUP)
    web = await pool.fetchrow("SELECT * FROM monitor_status WHERE monitor_id = 'web'")
    assert (web["status"], web["since_ms"]) == ("up", T0 + 5000)


async def test_trim_keeps_what_a_group_has_not_acknowledged(r, keys):
    await publish(r, keys, [check_result("bulk", T0 + i) for i in range(3000)])
    # "clickhouse" acknowledged everything; "status" acknowledged all but entry 2,000.
    read = await r.xreadgroup(CLICKHOUSE_GROUP, "a", {keys.results: ">"})
    await r.xack(keys.results, CLICKHOUSE_GROUP, *[eid for eid, _ in read[0][1]])
    read = await r.xreadgroup(STATUS_GROUP, "b", {keys.results: ">"})
    ids = [eid for eid, _ in read[0][1]]
    held = ids[2000]
    await r.xack(keys.results, STATUS_GROUP, *[eid for eid in ids if eid != held])
    trimmed = await safe_trim(r, keys.results)
    remaining = [eid for eid, _ in await r.xrange(keys.results)]
    assert trimmed > 0
    assert held in remaining
    assert remaining == ids[-len(remaining):]
    # Once it is acknowledged too, the trim may go past it.
    await r.xack(keys.results, STATUS_GROUP, held)
    assert await safe_trim(r, keys.results) > 0
