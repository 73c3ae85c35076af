"""The rollups (migration 0007, engine.rollups) give the figures the raw rows give with FINAL,
on chDB: duplicates, an expired row and its late real result, maintenance, several regions,
ranges with partial hours; before the settle step has run, after it, and after a rerun."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise

import pytest
import redis.asyncio as aioredis
from redis.exceptions import LockNotOwnedError

from engine import rollups
from engine.clickhouse import ClickHouse
from engine.events import CheckResult, Event, Outcome, Status
from engine.keys import Keys
from engine.rollups import HOUR_MS, Tally
from sinks.clickhouse import COLUMNS, row
from sinks.rollups import GRACE_MS, RollupSettler
from sinks.status_events import COLUMNS as STATUS_COLUMNS
from sinks.status_events import row as status_row
from tests.support.events import change
from tests.support.helpers import check_result, running, wait_for

T0 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)
STEP_MS = 7 * 60_000
TABLES = ("check_results", "results_hourly", "results_daily", "results_monthly", "status_events",
          "status_hourly", "rollups_settled")


@pytest.fixture
async def empty(ch: ClickHouse) -> ClickHouse:
    for table in TABLES:
        await ch.command(f"TRUNCATE TABLE {table}")
    return ch


async def write(ch: ClickHouse, results: list[CheckResult]) -> None:
    await ch.insert("check_results", [row(r) for r in results], COLUMNS)


def history(monitors: tuple[str, ...] = ("a", "b"), regions: tuple[str, ...] = ("eu", "us"),
            hours: int = 60, seed: int = 11) -> list[CheckResult]:
    """A check every 7 minutes per monitor and region, outcomes drawn by seed, some inside
    maintenance, latencies on the answers."""
    rnd = random.Random(seed)
    outcomes: list[Outcome] = ["up"] * 12 + ["down", "degraded", "error", "expired"]
    out = []
    for m in monitors:
        for region in regions:
            for t in range(T0, T0 + hours * HOUR_MS, STEP_MS):
                outcome = rnd.choice(outcomes)
                answered = outcome in ("up", "degraded")
                out.append(check_result(m, t, outcome, region=region,
                                        latency_ms=rnd.uniform(5, 900) if answered else None,
                                        maintenance=rnd.random() < 0.05))
    return out


RAW_TALLY = """
SELECT monitor_id, countIf(outcome IN ('up', 'degraded') AND NOT maintenance),
       countIf(outcome = 'down' AND NOT maintenance),
       countIf(outcome = 'degraded' AND NOT maintenance),
       countIf(outcome IN ('error', 'expired') AND NOT maintenance), countIf(maintenance)
FROM check_results FINAL
WHERE scheduled >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')
  AND scheduled < fromUnixTimestamp64Milli({until:Int64}, 'UTC')
GROUP BY monitor_id
"""


RAW_HOURLY = """
SELECT monitor_id, region, toStartOfHour(scheduled) AS h,
       countIf(outcome = 'up' AND NOT maintenance), countIf(outcome = 'down' AND NOT maintenance),
       countIf(outcome = 'degraded' AND NOT maintenance),
       countIf(outcome = 'error' AND NOT maintenance),
       countIf(outcome = 'expired' AND NOT maintenance), countIf(maintenance)
FROM check_results FINAL
GROUP BY ALL ORDER BY ALL
"""


async def raw_tallies(ch: ClickHouse, since_ms: int, until_ms: int) -> dict[str, Tally]:
    rows = await ch.rows(RAW_TALLY, {"since": since_ms, "until": until_ms})
    return {m: Tally(*(int(v) for v in rest)) for m, *rest in rows}


async def raw_daily(ch: ClickHouse, first: date, last: date) -> dict[str, dict[date, Tally]]:
    out: dict[str, dict[date, Tally]] = {}
    day = first
    while day <= last:
        start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
        for m, tally in (await raw_tallies(ch, start, start + 24 * HOUR_MS)).items():
            out.setdefault(m, {})[day] = tally
        day += timedelta(days=1)
    return out


async def raw_latency(ch: ClickHouse, monitor_id: str, since_ms: int, until_ms: int
                      ) -> dict[int, tuple[float, ...]]:
    """Exact quantiles of the answers per hour, the figure the histogram approximates."""
    rows = await ch.rows(
        "SELECT toInt64(toUnixTimestamp(toStartOfHour(scheduled))) * 1000 AS h, "
        "quantilesExactHigh(0.5, 0.95)(latency_ms) FROM check_results FINAL "
        "WHERE monitor_id = {m:String} AND outcome IN ('up', 'degraded') AND NOT maintenance "
        "AND latency_ms IS NOT NULL "
        "AND scheduled >= fromUnixTimestamp64Milli({since:Int64}, 'UTC') "
        "AND scheduled < fromUnixTimestamp64Milli({until:Int64}, 'UTC') GROUP BY h",
        {"m": monitor_id, "since": since_ms, "until": until_ms})
    return {int(h): tuple(q) for h, q in rows}


def folded_copies(results: list[CheckResult]) -> list[CheckResult]:
    """Rows check_results folds away: a redelivered copy of every 9th result, and an
    `expired` for every 13th answered one (written first, as by a late re-run's expiry)."""
    copies = [r for r in results[::9]]
    expired = [check_result(r.monitor_id, r.scheduled_ms, "expired", region=r.region,
                            started_ms=r.started_ms + 60_000, finished_ms=r.started_ms + 60_001,
                            maintenance=r.maintenance)
               for r in results[::13] if r.outcome != "expired"]
    return copies + expired


async def assert_same(ch: ClickHouse, windows: list[tuple[int, int]], first: date,
                      last: date) -> None:
    for since, until in windows:
        raw = await raw_tallies(ch, since, until)
        got = await rollups.tallies(ch, ["a", "b", "none"], since, until)
        assert got == {"a": raw.get("a", rollups.ZERO), "b": raw.get("b", rollups.ZERO),
                       "none": rollups.ZERO}, (since, until)
    assert await rollups.daily(ch, ["a", "b"], first, last) == await raw_daily(ch, first, last)


WINDOWS = [(T0, T0 + 60 * HOUR_MS),  # everything, hour-aligned
           (T0 + 17 * 60_000, T0 + 50 * HOUR_MS + 31 * 60_000),  # partial hours at both ends
           (T0 + 5 * HOUR_MS + 60_000, T0 + 5 * HOUR_MS + 20 * 60_000),  # inside one hour
           (T0 + 24 * HOUR_MS, T0 + 48 * HOUR_MS)]  # one UTC day
FIRST, LAST = date(2026, 3, 1), date(2026, 3, 3)


async def test_figures_equal_the_raw_rows_before_and_after_settling(empty: ClickHouse) -> None:
    results = history()
    await write(empty, folded_copies(results))
    await write(empty, results)
    await write(empty, results[::9])  # a redelivered batch after the real one
    # The materialized view counted every copy: the rollup alone is wrong until settled.
    counted = (await empty.rows("SELECT sum(up + down + degraded + error + expired + "
                                "maintenance) FROM results_hourly"))[0][0]
    assert counted > len(results)

    await assert_same(empty, WINDOWS, FIRST, LAST)  # nothing settled: all raw
    marks = await rollups.settle(empty, T0 + 40 * HOUR_MS + 25 * 60_000)
    assert marks == {"results": T0 + 40 * HOUR_MS, "status": T0 + 40 * HOUR_MS,
                     "monthly": int(datetime(2026, 2, 1, tzinfo=UTC).timestamp() * 1000)}
    await assert_same(empty, WINDOWS, FIRST, LAST)  # settled hours from the rollups
    await rollups.settle(empty, T0 + 80 * HOUR_MS)
    settled_rows = (await empty.rows("SELECT count() FROM results_hourly"))[0][0]
    await assert_same(empty, WINDOWS, FIRST, LAST)
    # The rollups alone now equal the raw rows, every hour and every day.
    hourly = await empty.rows("SELECT monitor_id, region, hour, sum(up), sum(down), "
                              "sum(degraded), sum(error), sum(expired), sum(maintenance) "
                              "FROM results_hourly GROUP BY ALL HAVING sum(up + down + "
                              "degraded + error + expired + maintenance) != 0 ORDER BY ALL")
    raw = await empty.rows(RAW_HOURLY)
    assert hourly == raw

    # Idempotent: a rerun (as after a crash before the mark was written) inserts nothing.
    await rollups.settle(empty, T0 + 80 * HOUR_MS)
    assert (await empty.rows("SELECT count() FROM results_hourly"))[0][0] == settled_rows


async def test_a_duplicate_after_settling_is_taken_out_by_the_next_run(empty: ClickHouse
                                                                       ) -> None:
    results = history(hours=6)
    await write(empty, results)
    await rollups.settle(empty, T0 + 6 * HOUR_MS)
    await write(empty, results[:40])  # redelivered after its hours were settled
    window = [(T0, T0 + 6 * HOUR_MS)]
    before = await rollups.tallies(empty, ["a", "b"], *window[0])
    assert before != await raw_tallies(empty, *window[0])  # counted twice in settled hours
    await rollups.settle(empty, T0 + 6 * HOUR_MS)
    await assert_same(empty, window, FIRST, FIRST)


async def test_latency_hourly_matches_exact_quantiles(empty: ClickHouse) -> None:
    results = history(monitors=("a",), hours=8)
    await write(empty, results + results[::5])
    since, until = T0 + 30 * 60_000, T0 + 8 * HOUR_MS
    for settled_through in (None, T0 + 8 * HOUR_MS):
        if settled_through:
            await rollups.settle(empty, settled_through)
        got = (await rollups.latency_hourly(empty, ["a"], since, until))["a"]
        exact = await raw_latency(empty, "a", since, until)
        assert [h for h, *_ in got] == sorted(exact)
        for hour, p50, p95 in got:
            want50, want95 = exact[hour]
            # The same rank, in a bucket 1% wide: within 0.5% of (1 + latency).
            assert abs(p50 - want50) <= 0.006 * (1 + want50)
            assert abs(p95 - want95) <= 0.006 * (1 + want95)


INTERVALS = """
SELECT monitor_id, status, toUnixTimestamp64Milli(at) AS start,
       toUnixTimestamp64Milli(leadInFrame(at, 1, fromUnixTimestamp64Milli({now:Int64}, 'UTC'))
           OVER (PARTITION BY monitor_id ORDER BY at, event_id
                 ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING)) AS until
FROM status_events FINAL
WHERE region = '*'
"""


async def windowed_times(ch: ClickHouse, edges: list[int], now_ms: int
                         ) -> dict[str, list[dict[str, int]]]:
    """Time per status per period from the intervals between consecutive events (window
    functions over status_events FINAL, as engine.incidents.DOWNTIME_SQL)."""
    out: dict[str, list[dict[str, int]]] = {}
    for monitor_id, status, start, until in await ch.rows(INTERVALS, {"now": now_ms}):
        per = out.setdefault(monitor_id, [{} for _ in edges[1:]])
        for i, (a, b) in enumerate(pairwise(edges)):
            overlap = min(b, until, now_ms) - max(a, start)
            if overlap > 0:
                per[i][status] = per[i].get(status, 0) + overlap
    return out


def transitions(monitor_id: str, start_ms: int, count: int, seed: int,
                first_previous: Status | None = None) -> list[Event]:
    """monitor.changed events at random times, each from the status before it; the first
    from `first_previous` (the evaluator's first change of a monitor is from `unknown`, a
    status no change entered)."""
    rnd = random.Random(seed)
    statuses: list[Status] = ["up", "down", "degraded", "unknown", "flapping"]
    at, previous, out = start_ms, first_previous, []
    for _ in range(count):
        at += rnd.randint(60_000, 5 * HOUR_MS)
        status = rnd.choice([s for s in statuses if s != previous])
        out.append(change(monitor_id, at, status, previous))
        previous = status
    return out


async def test_time_in_status_equals_the_window_functions(empty: ClickHouse) -> None:
    events = (transitions("a", T0, 40, seed=3)
              + transitions("b", T0 + 7 * HOUR_MS, 25, seed=4, first_previous="unknown"))
    region = change("a", T0 + 90_000, "down", "up", region="eu")  # a region's: not counted
    await empty.insert("status_events", [status_row(e) for e in [*events, region]],
                       STATUS_COLUMNS)
    await empty.insert("status_events", [status_row(e) for e in events[::4]],
                       STATUS_COLUMNS)  # redelivered
    now = T0 + 80 * HOUR_MS + 12 * 60_000
    edges = [T0 + 25 * 60_000, *range(T0 + 6 * HOUR_MS, T0 + 120 * HOUR_MS, 18 * HOUR_MS),
             T0 + 130 * HOUR_MS + 5]
    want = await windowed_times(empty, edges, now)
    for through in (None, T0 + 50 * HOUR_MS + 30 * 60_000, T0 + 200 * HOUR_MS):
        if through:
            await rollups.settle(empty, through)
        got = await rollups.status_times(empty, ["a", "b", "none"], edges, now)
        for monitor_id in ("a", "b"):
            assert [t.by_status for t in got[monitor_id]] == want[monitor_id], through
        assert all(t.by_status == {} for t in got["none"])
        spans = [min(b, now) - min(a, now) for a, b in pairwise(edges)]
        assert [t.span_ms for t in got["b"]] == spans
        first = got["b"][0]  # before b's first event: untracked, neither up nor down
        assert first.untracked_ms == first.span_ms - sum(want["b"][0].values())


async def test_the_clickhouse_sink_role_settles_closed_hours(empty: ClickHouse,
                                                             r: aioredis.Redis,
                                                             keys: Keys) -> None:
    now = int((await empty.rows("SELECT toUnixTimestamp64Milli(now64(3))"))[0][0])
    start = now - now % HOUR_MS - 3 * HOUR_MS
    results = [check_result("a", t, "up" if i % 5 else "down", region=region, latency_ms=40.0)
               for i, t in enumerate(range(start, now, STEP_MS)) for region in ("eu", "us")]
    await write(empty, results)
    await write(empty, results[::3])
    settler = RollupSettler(empty, r, keys, every_s=0.05)
    closed = now - GRACE_MS - (now - GRACE_MS) % HOUR_MS

    async def settled() -> bool:
        return await rollups.settled_ms(empty, "results") >= closed

    async with running(settler):
        await wait_for(settled)
    assert settler.marks["status"] >= closed
    tallied = await empty.rows(
        "SELECT sum(up + down) FROM results_hourly "
        "WHERE hour < toDateTime(intDiv({c:Int64}, 1000), 'UTC')", {"c": closed})
    assert tallied[0][0] == sum(1 for r in results if r.scheduled_ms < closed)


async def test_a_latency_that_is_not_finite_does_not_fail_the_insert(empty: ClickHouse) -> None:
    await write(empty, [check_result("a", T0, "up", latency_ms=float("inf")),
                        check_result("a", T0 + STEP_MS, "up", latency_ms=12.0)])
    assert (await rollups.tallies(empty, ["a"], T0, T0 + HOUR_MS))["a"].up == 2


async def rollup_hours(ch: ClickHouse) -> list[tuple[object, ...]]:
    return await ch.rows("SELECT monitor_id, region, hour, sum(up), sum(down), sum(degraded), "
                         "sum(error), sum(expired), sum(maintenance) FROM results_hourly "
                         "GROUP BY ALL HAVING sum(up + down + degraded + error + expired + "
                         "maintenance) != 0 ORDER BY ALL")


async def test_two_settlers_at_once_insert_each_correction_once(empty: ClickHouse,
                                                                r: aioredis.Redis,
                                                                keys: Keys) -> None:
    now = int((await empty.rows("SELECT toUnixTimestamp64Milli(now64(3))"))[0][0])
    start = now - now % HOUR_MS - 30 * HOUR_MS
    results = history(hours=28)
    shifted = [check_result(x.monitor_id, x.scheduled_ms - T0 + start, x.outcome,
                            region=x.region, latency_ms=x.latency_ms,
                            maintenance=x.maintenance) for x in results]
    await write(empty, shifted)
    await write(empty, shifted[::4])  # counted twice by the view until settled
    first, second = RollupSettler(empty, r, keys), RollupSettler(empty, r, keys)
    marks = await asyncio.gather(first.settle_once(), second.settle_once())
    assert marks.count(None) == 1  # the one that did not get the lock skipped the round
    assert await rollup_hours(empty) == await empty.rows(
        RAW_HOURLY.replace("FROM check_results FINAL",
                           "FROM check_results FINAL WHERE scheduled < "
                           "fromUnixTimestamp64Milli({c:Int64}, 'UTC')"),
        {"c": next(m for m in marks if m)["results"]})
    assert not await r.exists(keys.rollups_settle)  # released by its owner


async def test_a_lock_left_by_a_killed_settler_expires(empty: ClickHouse, r: aioredis.Redis,
                                                       keys: Keys) -> None:
    now = int((await empty.rows("SELECT toUnixTimestamp64Milli(now64(3))"))[0][0])
    await write(empty, [check_result("a", now - 3 * HOUR_MS, "up", latency_ms=12.0)])
    killed = RollupSettler(empty, r, keys, lock_ttl_s=0.5)
    assert await killed.lock.acquire()  # and never released: its process died mid-run
    survivor = RollupSettler(empty, r, keys)
    assert await survivor.settle_once() is None
    assert await rollups.settled_ms(empty, "results") == 0

    async def settles() -> bool:
        return await survivor.settle_once() is not None

    await wait_for(settles)
    assert await rollups.settled_ms(empty, "results") > now - 3 * HOUR_MS
    # The dead settler's token no longer opens the lock the survivor took and released.
    with pytest.raises(LockNotOwnedError):
        await killed.lock.release()


def month_ms(year: int, month: int, day: int = 1, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp() * 1000)


async def test_whole_months_come_from_the_monthly_rollup(empty: ClickHouse) -> None:
    results = [check_result(m, t, outcome, region=region, maintenance=i % 41 == 0,
                            latency_ms=float(20 + i % 300) if outcome == "up" else None)
               for m in ("a", "b") for region in ("eu", "us")
               for i, t in enumerate(range(T0, month_ms(2026, 6, 28), 53 * 60_000))
               for outcome in [("up", "up", "up", "down", "error", "degraded")[i % 7 % 6]]]
    for month in range(3, 7):  # check_results has a partition a day, 100 at most an insert
        part = [r for r in results
                if month_ms(2026, month) <= r.scheduled_ms < month_ms(2026, month + 1)]
        await write(empty, part)
        await write(empty, part[::11])  # counted twice by the views until settled
    # As if written before migration 0008: the monthly rollup has none of it yet.
    await empty.command("TRUNCATE TABLE results_monthly")
    marks = await rollups.settle(empty, month_ms(2026, 6, 28))
    assert marks["monthly"] == month_ms(2026, 6)  # closed months, past the look back
    monthly = await empty.rows("SELECT monitor_id, month, sum(up), sum(down) FROM "
                               "results_monthly WHERE month < '2026-06-01' "
                               "GROUP BY ALL ORDER BY ALL")
    raw = await empty.rows("SELECT monitor_id, toStartOfMonth(scheduled) AS month, "
                           "countIf(outcome = 'up' AND NOT maintenance), "
                           "countIf(outcome = 'down' AND NOT maintenance) FROM check_results "
                           "FINAL WHERE scheduled < {c:DateTime} GROUP BY ALL ORDER BY ALL",
                           {"c": datetime(2026, 6, 1, tzinfo=UTC)})
    assert monthly == raw

    # Mid-month at both ends: days, hours and raw rows at the edges, April and May whole.
    since, until = month_ms(2026, 3, 10, 5, 17), month_ms(2026, 6, 20, 11, 0)
    bounds = rollups.edges(since, until, "month")
    assert bounds[1:-1] == [month_ms(2026, 4), month_ms(2026, 5), month_ms(2026, 6)]
    got = await rollups.period_tallies(empty, ["a", "b"], bounds)
    found = await rollups.summaries(empty, ["a"], bounds)
    for i, (a, b) in enumerate(pairwise(bounds)):
        want = await raw_tallies(empty, a, b)
        assert {m: got[m][i] for m in ("a", "b")} == want, (a, b)
        assert found["a"][i].tally == want["a"]
        exact = (await empty.rows(
            "SELECT quantilesExactHigh(0.5, 0.95, 0.99)(latency_ms) FROM check_results FINAL "
            "WHERE monitor_id = 'a' AND outcome IN ('up', 'degraded') AND NOT maintenance "
            "AND latency_ms IS NOT NULL "
            "AND scheduled >= fromUnixTimestamp64Milli({a:Int64}, 'UTC') "
            "AND scheduled < fromUnixTimestamp64Milli({b:Int64}, 'UTC')", {"a": a, "b": b}))
        for value, want_q in zip((found["a"][i].p50, found["a"][i].p95, found["a"][i].p99),
                                 exact[0][0], strict=True):
            assert value is not None
            assert abs(value - want_q) <= 0.006 * (1 + want_q)
    # The year's total from the same parts as the months.
    total = await rollups.tallies(empty, ["a"], since, until)
    assert total["a"] == (await raw_tallies(empty, since, until))["a"]
