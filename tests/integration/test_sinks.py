"""Both sinks on real Redis, Postgres and chDB: batches, idempotence, crash recovery, and the
status projection's order safety (late results in later batches, two sinks at once)."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.events import OUTCOMES, Outcome
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
SECOND = 1000


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


async def status_of(pool, monitor_id: str, region: str = "default") -> tuple[object, ...]:
    row = await pool.fetchrow("SELECT status, scheduled_ms, since_ms, check_id FROM monitor_status"
                              " WHERE monitor_id = $1 AND region = $2", monitor_id, region)
    return tuple(row.values()) if row is not None else ()


async def sink_batches(r, keys, postgres_dsn, *batches) -> None:
    """Each batch through the stream and a status sink of its own, one after the other: a
    later batch reaches SQL on its own, not folded by latest() into the one before."""
    for batch in batches:
        await publish(r, keys, batch)
        await run_sink(StatusSink(r, keys, SETTINGS, postgres_dsn=postgres_dsn), r, keys,
                       STATUS_GROUP)


async def test_a_late_result_splits_the_run_it_lands_in(r, keys, pool, clean, postgres_dsn):
    """Issue 8.8: down at 180 s, down at 300 s, then up at 240 s arriving late. Before the
    history, since_ms stayed at 180 s."""
    down_180 = check_result("web", T0 + 180 * SECOND, "down", error_kind="connect")
    down_300 = check_result("web", T0 + 300 * SECOND, "down", error_kind="connect")
    up_240 = check_result("web", T0 + 240 * SECOND, "up")
    await sink_batches(r, keys, postgres_dsn, [down_180], [down_300])
    assert await status_of(pool, "web") == ("down", T0 + 300 * SECOND, T0 + 180 * SECOND,
                                            down_300.check_id)
    await sink_batches(r, keys, postgres_dsn, [up_240])
    # The late result never moves the current status; it only moves since_ms.
    assert await status_of(pool, "web") == ("down", T0 + 300 * SECOND, T0 + 300 * SECOND,
                                            down_300.check_id)
    transitions = await pool.fetch("SELECT scheduled_ms, status, previous FROM status_transitions"
                                   " WHERE monitor_id = 'web' ORDER BY scheduled_ms")
    assert [tuple(t.values()) for t in transitions] == [
        (T0 + 180 * SECOND, "down", None), (T0 + 240 * SECOND, "up", "down"),
        (T0 + 300 * SECOND, "down", "up")]


async def test_a_late_result_extends_the_run_back(r, keys, pool, clean, postgres_dsn):
    await sink_batches(r, keys, postgres_dsn, [check_result("web", T0, "down")],
                       [check_result("web", T0 + 20 * SECOND, "up")],
                       [check_result("web", T0 + 10 * SECOND, "up")])
    assert (await status_of(pool, "web"))[:3] == ("up", T0 + 20 * SECOND, T0 + 10 * SECOND)


async def test_an_older_result_in_a_later_batch_never_moves_the_status(r, keys, pool, clean,
                                                                        postgres_dsn):
    newer = check_result("web", T0 + 2 * SECOND, "down", error_kind="connect", error="refused")
    await sink_batches(r, keys, postgres_dsn, [newer], [check_result("web", T0 + SECOND, "up")])
    row = await pool.fetchrow("SELECT * FROM monitor_status WHERE monitor_id = 'web'")
    assert (row["status"], row["scheduled_ms"], row["since_ms"], row["check_id"],
            row["error_kind"], row["error"]) == ("down", T0 + 2 * SECOND, T0 + 2 * SECOND,
                                                 newer.check_id, "connect", "refused")


async def test_a_second_result_for_the_same_slot_changes_nothing(r, keys, pool, clean,
                                                                  postgres_dsn):
    """A re-run of one check (same check_id) arriving in a later batch: the first result for
    the slot stays, in the status row and in the history."""
    first = check_result("web", T0, "up", latency_ms=12.0)
    rerun = check_result("web", T0, "down", error_kind="timeout", started_ms=T0 + 5 * SECOND,
                         finished_ms=T0 + 6 * SECOND)
    assert first.check_id == rerun.check_id
    await sink_batches(r, keys, postgres_dsn, [first], [rerun])
    row = await pool.fetchrow("SELECT * FROM monitor_status WHERE monitor_id = 'web'")
    assert (row["status"], row["since_ms"], row["finished_ms"], row["latency_ms"],
            row["error_kind"]) == ("up", T0, T0 + 2, 12.0, None)
    assert await pool.fetch("SELECT scheduled_ms, status FROM status_history") == [(T0, "up")]


async def test_replayed_results_change_nothing(r, keys, pool, clean, postgres_dsn):
    batch = [check_result("web", T0 + i * SECOND, "up" if i % 3 else "down") for i in range(9)]
    await sink_batches(r, keys, postgres_dsn, batch)
    before = (await status_of(pool, "web"),
              await pool.fetch("SELECT * FROM status_history ORDER BY scheduled_ms"))
    assert before[0][:3] == ("up", T0 + 8 * SECOND, T0 + 7 * SECOND)
    await sink_batches(r, keys, postgres_dsn, batch[::-1], batch[3:5], batch[:1])
    after = (await status_of(pool, "web"),
             await pool.fetch("SELECT * FROM status_history ORDER BY scheduled_ms"))
    assert after == before


def model(arrivals: list[tuple[int, Outcome]]) -> tuple[str, int, int, list[tuple[int, str]]]:
    """What the projection must hold for one monitor and region after `arrivals` (slot,
    outcome) in arrival order: the first result per slot counts, `expired` never does; the
    status of the newest slot, the slot, since (the first slot of the run of equal statuses
    that ends there) and the transitions."""
    first: dict[int, str] = {}
    for slot, outcome in arrivals:
        if outcome != "expired":
            first.setdefault(slot, outcome)
    slots = sorted(first)
    status, since = first[slots[-1]], slots[-1]
    for slot in reversed(slots):
        if first[slot] != status:
            break
        since = slot
    transitions = [(slot, first[slot]) for i, slot in enumerate(slots)
                   if i == 0 or first[slots[i - 1]] != first[slot]]
    return status, slots[-1], since, transitions


async def projection(pool, monitor_id: str, region: str) -> tuple[object, ...]:
    status = await pool.fetchrow("SELECT status, scheduled_ms, since_ms FROM monitor_status "
                                 "WHERE monitor_id = $1 AND region = $2", monitor_id, region)
    transitions = await pool.fetch(
        "SELECT scheduled_ms, status FROM status_transitions WHERE monitor_id = $1 AND "
        "region = $2 ORDER BY scheduled_ms", monitor_id, region)
    return (*status.values(), [tuple(t.values()) for t in transitions])


@pytest.fixture
async def status_sink(r, keys, postgres_dsn) -> AsyncIterator[StatusSink]:
    """A status sink whose write() a test calls itself, batch by batch."""
    sink = StatusSink(r, keys, SETTINGS, postgres_dsn=postgres_dsn)
    await sink.start()
    yield sink
    await sink.close()


results_in_arrival_order = st.lists(
    st.tuples(st.sampled_from(["eu", "us"]), st.integers(min_value=0, max_value=12),
              st.sampled_from(OUTCOMES)), min_size=1, max_size=40)


@given(results_in_arrival_order, st.lists(st.integers(min_value=1, max_value=6), max_size=40))
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_status_and_history_match_a_model_in_any_order_and_batching(
        status_sink, pool, arrivals, cuts):
    monitor = f"model-{uuid.uuid4().hex[:12]}"  # each example starts with no status or history
    results = [check_result(monitor, T0 + slot * SECOND, outcome, region=region)
               for region, slot, outcome in arrivals]
    batches, start = [], 0
    for size in [*cuts, len(results)]:
        batches.append(results[start:start + size])
        start += size
    for batch in batches:
        if batch:
            await status_sink.write(batch)
    for region in ("eu", "us"):
        mine = [(slot, outcome) for rg, slot, outcome in arrivals if rg == region]
        if all(outcome == "expired" for _, outcome in mine):
            assert await status_of(pool, monitor, region) == ()
            continue
        status, newest, since, transitions = model(mine)
        assert await projection(pool, monitor, region) == (
            status, T0 + newest * SECOND, T0 + since * SECOND,
            [(T0 + slot * SECOND, st_) for slot, st_ in transitions])


async def test_concurrent_status_sinks_agree_and_never_deadlock(r, keys, pool, clean,
                                                                 postgres_dsn):
    """Four sinks of one group, each handed every fourth batch of the same monitors' results
    in shuffled order, writing at the same time: no deadlock (with the keys unsorted this
    raised DeadlockDetectedError), and the projection is the one a single sink would build
    (every slot has one result, so arrival order cannot matter)."""
    rng = random.Random(8)
    monitors = [f"c{i:03d}" for i in range(300)]
    statuses: list[Outcome] = ["up", "down", "degraded"]
    truth = {(m, slot): rng.choice(statuses) for m in monitors for slot in range(8)}
    results = [check_result(m, T0 + slot * SECOND, outcome) for (m, slot), outcome in truth.items()]
    rng.shuffle(results)
    batches = [results[i:i + 300] for i in range(0, len(results), 300)]
    sinks = [StatusSink(r, keys, SETTINGS, postgres_dsn=postgres_dsn) for _ in range(4)]
    for sink in sinks:
        await sink.start()
    try:
        async def feed(sink: StatusSink, mine: list[list]) -> None:
            for batch in mine:
                await sink.write(batch)

        await asyncio.gather(*(feed(sink, batches[i::4]) for i, sink in enumerate(sinks)))
    finally:
        for sink in sinks:
            await sink.close()
    for m in monitors:
        status, newest, since, transitions = model(
            [(slot, outcome) for (mm, slot), outcome in truth.items() if mm == m])
        assert await projection(pool, m, "default") == (
            status, T0 + newest * SECOND, T0 + since * SECOND,
            [(T0 + slot * SECOND, st_) for slot, st_ in transitions])
