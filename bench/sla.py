"""SLA figures on chDB: from the rollups (migration 0007, engine.rollups) and from the raw rows
with FINAL, side by side, with the figures compared.

1. A year of raw results for --raw-monitors monitors (one check every --interval-s, 1% of the
   rows written twice, a late `expired` copy now and then, 2% in maintenance), settled; the
   year by month from the rollups and from check_results FINAL. A year of raw rows for 10,000
   monitors (a billion rows at 5 minutes) does not fit this machine: this part is scaled down
   to --raw-monitors and says so.
2. A year of rollups for --monitors monitors (10,000): daily rows with a latency histogram and
   status changes, written straight into the rollup tables (the monthly one fed by its view,
   then settled); the SLA by month for all of them at once. Its raw counterpart is part 1's
   time scaled linearly to as many monitors (printed as an extrapolation, not measured).
3. A 90-day SLA by day of one monitor checked every 30 s, from the rollups and from the raw
   rows with FINAL.

Times are the median of --repeat runs. Run: .venv/bin/python bench/sla.py
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from engine import rollups
from engine.clickhouse import ClickHouse
from engine.migrate import load, statements
from engine.rollups import DAY_MS, Summary, Tally

YEAR_START = int(datetime(2025, 12, 1, tzinfo=UTC).timestamp() * 1000)
YEAR_END = YEAR_START + 365 * DAY_MS
MONTHS = rollups.edges(YEAR_START, YEAR_END, "month")

# Outcomes by a hash of the row: 0.5% down, 0.3% error, 0.2% expired, 1% degraded. Mode
# `all` writes every row, `again` 1% of them a second time (a redelivered batch), `late` an
# `expired` copy of 0.5%, started later (a late re-run's expiry: the real result stays).
RAW_SQL = """
INSERT INTO check_results (check_id, monitor_id, region, scheduled, started, finished,
                           outcome, latency_ms, maintenance)
SELECT concat(m, ':eu:', toString(t)) AS check_id, m AS monitor_id, 'eu' AS region,
       fromUnixTimestamp64Milli(t, 'UTC') AS scheduled,
       fromUnixTimestamp64Milli(t + if(late, 60000, 5), 'UTC') AS started,
       fromUnixTimestamp64Milli(t + if(late, 60001, 60), 'UTC') AS finished,
       if(late, 'expired', multiIf(h % 1000 < 5, 'down', h % 1000 < 8, 'error',
                                   h % 1000 < 10, 'expired', h % 1000 < 20, 'degraded', 'up'))
           AS outcome,
       if(h % 1000 >= 10 AND NOT late, 20 + (h % 9973) / 20.0, NULL) AS latency_ms,
       h % 50 = 0 AS maintenance
FROM (SELECT concat({prefix:String}, toString(number % {monitors:UInt64})) AS m,
             {start:Int64} + intDiv(number, {monitors:UInt64}) * {step:Int64} AS t,
             cityHash64(number, {prefix:String}) AS h, {mode:String} = 'late' AS late
      FROM numbers({rows:UInt64}))
WHERE {mode:String} = 'all' OR ({mode:String} = 'again' AND h % 100 = 0)
   OR (late AND h % 200 = 1)
"""

# The same figures straight from the raw rows with FINAL: counts, and exact quantiles.
FINAL_SQL = """
SELECT monitor_id, roundDown(toUnixTimestamp64Milli(scheduled), {edges:Array(Int64)}) AS period,
       countIf(outcome IN ('up', 'degraded') AND NOT maintenance),
       countIf(outcome = 'down' AND NOT maintenance),
       countIf(outcome = 'degraded' AND NOT maintenance),
       countIf(outcome IN ('error', 'expired') AND NOT maintenance), countIf(maintenance),
       quantilesExactHighIf(0.5, 0.95, 0.99)(latency_ms, outcome IN ('up', 'degraded')
                                             AND NOT maintenance AND latency_ms IS NOT NULL)
FROM check_results FINAL
WHERE monitor_id IN {ids:Array(String)}
  AND scheduled >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')
  AND scheduled < fromUnixTimestamp64Milli({until:Int64}, 'UTC')
GROUP BY monitor_id, period
"""

# A year of days per monitor: counts and a latency histogram of 24 buckets near 20-400 ms.
DAILY_SQL = """
INSERT INTO results_daily (monitor_id, region, day, up, down, degraded, error, expired,
                           maintenance, latency)
SELECT concat('fleet-', toString(intDiv(number, 365))) AS monitor_id, 'eu' AS region,
       toDate(fromUnixTimestamp64Milli({start:Int64}, 'UTC')) + number % 365 AS day,
       toInt64(285) AS up, toInt64(cityHash64(number) % 3) AS down, toInt64(2) AS degraded,
       toInt64(1) AS error, toInt64(0) AS expired, toInt64(number % 7 = 0) AS maintenance,
       mapFromArrays(arrayMap(i -> toUInt16(300 + i * 12 + cityHash64(number, i) % 8),
                              range(24)),
                     arrayMap(i -> toInt64(1 + cityHash64(i, number) % 20), range(24)))
           AS latency
FROM numbers({monitors:UInt64} * 365)
"""

# Two status changes (down, then up 20 minutes later) per monitor every ~15 days.
STATUS_SQL = """
INSERT INTO status_hourly (monitor_id, region, status, hour, changes, weighted)
SELECT monitor_id, '*', change.1, toStartOfHour(fromUnixTimestamp64Milli(change.3, 'UTC')),
       change.2, change.2 * change.3
FROM (SELECT concat('fleet-', toString(number % {monitors:UInt64})) AS monitor_id,
             {start:Int64} + intDiv(number, {monitors:UInt64}) * 15 * 86400000
                 + (cityHash64(number) % 86400000) AS t,
             [('down', toInt64(1), t), ('up', toInt64(-1), t),
              ('up', toInt64(1), t + 1200000), ('down', toInt64(-1), t + 1200000)] AS changes
      FROM numbers({monitors:UInt64} * 24))
ARRAY JOIN changes AS change
"""


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, Any]:
    """Median wall time in ms over `repeat` runs, and the last answer."""
    times, answer = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        answer = await fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), answer


def from_final(rows: list[tuple[Any, ...]], edges: list[int]) -> dict[str, list[Any]]:
    index = {edge: i for i, edge in enumerate(edges[:-1])}
    out: dict[str, list[Any]] = {}
    for monitor_id, period, up, down, degraded, unknown, maint, q in rows:
        per = out.setdefault(monitor_id, [None] * (len(edges) - 1))
        per[index[period]] = (Tally(up, down, degraded, unknown, maint), q)
    return out


def same(rollup: dict[str, list[Summary]], final: dict[str, list[Any]]) -> bool:
    """The same counts in every period, and each quantile in the 1% bucket of the exact one
    (within 0.5% of 1 + it)."""
    for monitor_id, per in final.items():
        for got, (tally, exact) in zip(rollup[monitor_id], per, strict=True):
            near = all(abs(a - b) <= 0.005 * (1 + b) + 1e-3
                       for a, b in zip((got.p50, got.p95, got.p99), exact, strict=True))
            if got.tally != tally or not near:
                return False
    return True


async def migrated(path: str) -> ClickHouse:
    ch = ClickHouse.from_url(f"chdb://{path}")
    for migration in load("clickhouse"):
        for statement in statements(migration.sql):
            await ch.command(statement)
    return ch


async def write_raw(ch: ClickHouse, prefix: str, monitors: int, since_ms: int, until_ms: int,
                    step_ms: int, modes: tuple[str, ...]) -> None:
    """A month at a time: check_results has a partition per day, and one insert may touch at
    most 100."""
    chunk = 30 * DAY_MS
    for start in range(since_ms, until_ms, chunk):
        rows = monitors * ((min(start + chunk, until_ms) - start) // step_ms)
        for mode in modes:
            await ch.command(RAW_SQL, {"prefix": prefix, "monitors": monitors, "start": start,
                                       "step": step_ms, "rows": rows, "mode": mode})


async def raw_year(ch: ClickHouse, monitors: int, step_s: int, repeat: int) -> float:
    rows = monitors * (365 * 86_400 // step_s)
    start = time.perf_counter()
    await write_raw(ch, "raw-", monitors, YEAR_START, YEAR_END, step_s * 1000,
                    ("all", "again", "late"))
    written = time.perf_counter() - start
    start = time.perf_counter()
    await rollups.settle(ch, YEAR_END)
    settled = time.perf_counter() - start
    print(f"1. raw year, scaled down: {monitors} monitors x 1 check / {step_s} s = {rows:,} "
          f"rows (+1% written twice, +0.5% late expired copies): written in {written:.1f} s, "
          f"settled in {settled:.1f} s")
    ids = [f"raw-{i}" for i in range(monitors)]
    rollup_ms, from_rollups = await timed(lambda: rollups.summaries(ch, ids, MONTHS), repeat)
    final_ms, rows_final = await timed(lambda: ch.rows(FINAL_SQL, {
        "ids": ids, "edges": MONTHS, "since": YEAR_START, "until": YEAR_END}), repeat)
    equal = same(from_rollups, from_final(rows_final, MONTHS))
    print(f"   year by month, {monitors} monitors: rollups {rollup_ms:.1f} ms, raw FINAL "
          f"{final_ms:.1f} ms, ratio {final_ms / rollup_ms:.1f}x; same figures: {equal}")
    return final_ms / monitors


async def fleet_year(ch: ClickHouse, monitors: int, raw_per_monitor_ms: float,
                     repeat: int) -> None:
    start = time.perf_counter()
    await ch.command(DAILY_SQL, {"monitors": monitors, "start": YEAR_START})
    await ch.command(STATUS_SQL, {"monitors": monitors, "start": YEAR_START})
    await ch.insert("rollups_settled", [["results", datetime.fromtimestamp(YEAR_END / 1000, UTC)],
                                        ["status", datetime.fromtimestamp(YEAR_END / 1000, UTC)]],
                    ["rollup", "through"])
    written = time.perf_counter() - start
    # The settle step a running Vigil has run by then: it marks the closed months of the
    # monthly rollup (fed from the daily rows by its view) as settled.
    await rollups.settle(ch, YEAR_END + rollups.LOOKBACK_MS)
    settled = time.perf_counter() - start - written
    # A live table's parts are merged in the background; measure that state, not the
    # moment after one big insert.
    for table in ("results_daily", "results_monthly", "status_hourly"):
        await ch.command(f"OPTIMIZE TABLE {table} FINAL")
    print(f"2. a year of rollups for {monitors:,} monitors ({monitors * 365:,} daily rows, "
          f"{monitors * 96:,} status rows) written in {written:.1f} s, settled (the months) in "
          f"{settled:.1f} s, all merged in {time.perf_counter() - start:.1f} s")
    ids = [f"fleet-{i}" for i in range(monitors)]
    tally_ms, _ = await timed(lambda: rollups.period_tallies(ch, ids, MONTHS), repeat)
    counts_ms, found = await timed(lambda: rollups.summaries(ch, ids, MONTHS), repeat)
    times_ms, spent = await timed(lambda: rollups.status_times(ch, ids, MONTHS, YEAR_END),
                                  repeat)
    sample = found["fleet-0"][0]
    print(f"   SLA by month for all {monitors:,}: checks alone {tally_ms:.0f} ms, checks and "
          f"latency quantiles {counts_ms:.0f} ms, time "
          f"in status {times_ms:.0f} ms (fleet-0 in month 1: {sample.tally}, p95 "
          f"{sample.p95} ms, down {spent['fleet-0'][0].down_ms / 60_000:.0f} min)")
    year = [YEAR_START, YEAR_END]
    total_tally_ms, _ = await timed(lambda: rollups.period_tallies(ch, ids, year), repeat)
    total_ms, _ = await timed(lambda: rollups.summaries(ch, ids, year), repeat)
    print(f"   the year's total for all {monitors:,}: checks alone {total_tally_ms:.0f} ms, "
          f"checks and latency quantiles {total_ms:.0f} ms")
    extrapolated = raw_per_monitor_ms * monitors
    print(f"   raw FINAL for {monitors:,} monitors, extrapolated linearly from part 1 (not "
          f"measured): {extrapolated / 1000:.1f} s, {extrapolated / counts_ms:.0f}x the rollups "
          f"with latency")


async def ninety_days(ch: ClickHouse, repeat: int) -> None:
    until = YEAR_END
    since = until - 90 * DAY_MS
    rows = 90 * 86_400 // 30
    await write_raw(ch, "ninety-", 1, since, until, 30_000, ("all",))
    await rollups.settle(ch, until)
    days = rollups.edges(since, until, "day")
    rollup_ms, from_rollups = await timed(lambda: rollups.summaries(ch, ["ninety-0"], days),
                                          repeat)
    final_ms, rows_final = await timed(lambda: ch.rows(FINAL_SQL, {
        "ids": ["ninety-0"], "edges": days, "since": since, "until": until}), repeat)
    equal = same(from_rollups, from_final(rows_final, days))
    print(f"3. 90-day SLA by day, one monitor every 30 s ({rows:,} raw rows): rollups "
          f"{rollup_ms:.1f} ms, raw FINAL {final_ms:.1f} ms, ratio {final_ms / rollup_ms:.1f}x; "
          f"same figures: {equal}")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--monitors", type=int, default=10_000)
    p.add_argument("--raw-monitors", type=int, default=100)
    p.add_argument("--interval-s", type=int, default=300)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="vigil-bench-sla-") as path:
        ch = await migrated(f"{path}/chdb")
        try:
            per_monitor = await raw_year(ch, args.raw_monitors, args.interval_s, args.repeat)
            await ninety_days(ch, args.repeat)
            await fleet_year(ch, args.monitors, per_monitor, args.repeat)
        finally:
            await ch.close()


if __name__ == "__main__":
    asyncio.run(main())
