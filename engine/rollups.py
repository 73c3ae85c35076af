"""SLA and uptime figures from the ClickHouse rollups (migration 0007).

Hours the settle step has settled come from the rollups; the rest (recent hours, a range's
partial edges) from the raw rows with FINAL. Both halves are computed by the same expressions,
so a figure equals the raw one whatever the settle step has done so far.
"""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Any, NamedTuple

import asyncpg

from engine import maintenance_store, store
from engine.clickhouse import ClickHouse
from engine.maintenance import Window, covered_ms

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
# Latency buckets: bucket k holds latencies whose log1p is nearest k*log(1.01), so a quantile
# read from the histogram is within 0.5% of (1 + the true value). Migration 0007 writes the
# same expression into results_hourly_mv. A value that is not finite would fail the conversion
# and with it the whole insert into check_results: it counts as 0.
BUCKET = ("toUInt16(round(log1p(if(isFinite(ifNull(latency_ms, 0)),"
          " greatest(ifNull(latency_ms, 0), 0), 0)) / log(1.01)))")
# What one group of raw check_results rows adds to a rollup row, as the materialized view
# computes it: outcomes outside maintenance, maintenance apart, the up/degraded histogram.
# The column is named with its table: the alias `maintenance` would shadow it.
RESULT_SUMS = f"""
       toInt64(countIf(outcome = 'up' AND NOT check_results.maintenance)) AS up,
       toInt64(countIf(outcome = 'down' AND NOT check_results.maintenance)) AS down,
       toInt64(countIf(outcome = 'degraded' AND NOT check_results.maintenance)) AS degraded,
       toInt64(countIf(outcome = 'error' AND NOT check_results.maintenance)) AS error,
       toInt64(countIf(outcome = 'expired' AND NOT check_results.maintenance)) AS expired,
       toInt64(countIf(check_results.maintenance)) AS maintenance,
       sumMapIf(map({BUCKET}, toInt64(1)),
                outcome IN ('up', 'degraded') AND NOT check_results.maintenance
                AND latency_ms IS NOT NULL)
           AS latency"""
COUNTS = ("up", "down", "degraded", "error", "expired", "maintenance")
RESULTS = "results"
STATUS = "status"
MONTHLY = "monthly"


class Tally(NamedTuple):
    """Checks, by count; maintenance ones only in `maintenance`. A tuple rather than a
    dataclass: made three times faster, and a status page makes 90,000 of them."""

    up: int  # up + degraded answers
    down: int
    degraded: int
    unknown: int  # error + expired: Vigil could not check; neither up nor down
    maintenance: int

    @property
    def uptime(self) -> float | None:
        """up / (up + down); None: no answers."""
        answered = self.up + self.down
        return self.up / answered if answered else None


ZERO = Tally(0, 0, 0, 0, 0)


class Summary(NamedTuple):
    """A period's checks and the latency quantiles of its answers (None: no answers). A
    tuple, as Tally: 10,000 monitors by month are 120,000 of them."""

    tally: Tally = ZERO
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None

    def quantile(self, q: float) -> float | None:
        """The 0.5, 0.95 or 0.99 quantile (the ones the query computes)."""
        known = {0.5: self.p50, 0.95: self.p95, 0.99: self.p99}
        if q not in known:
            raise ValueError(f"quantile {q}: only 0.5, 0.95 and 0.99 are computed")
        return known[q]


async def settled_ms(ch: ClickHouse, rollup: str) -> int:
    """Through which hour (exclusive, epoch ms) `rollup` equals its raw rows; 0: none yet."""
    rows = await ch.rows("SELECT toInt64(toUnixTimestamp(argMax(through, at))) * 1000, count() "
                         "FROM rollups_settled WHERE rollup = {rollup:String}",
                         {"rollup": rollup})
    return int(rows[0][0]) if rows and rows[0][1] else 0


def _floor(ms: int, step: int) -> int:
    return ms - ms % step


def _ceil(ms: int, step: int) -> int:
    return -(-ms // step) * step


def _month_floor(ms: int) -> int:
    """The start of the UTC month holding `ms`."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return _day_ms(date(moment.year, moment.month, 1))


def _month_ceil(ms: int) -> int:
    """The first start of a UTC month at or after `ms`."""
    start = _month_floor(ms)
    if start == ms:
        return ms
    return _month_floor(start + 32 * DAY_MS)


# The parts a figure is read from, each over one range [lo, hi) of whole days, whole hours or
# raw rows; a query holds only the parts whose range is not empty, so a settled range never
# touches check_results (a FINAL over an empty range still reads every part it cannot prune).
# Raw rows are grouped by period before the outer sum, `ts` being the latest in the group
# (inside the same period), so a year of raw rows never reaches the outer level one by one.
def _rollup_part(table: str, bucket: str, as_time: str) -> str:
    """The part read from one rollup table, its `bucket` column compared as `as_time`
    (Date for days and months, DateTime for hours)."""
    return f"""
    SELECT monitor_id, toInt64(toUnixTimestamp(toDateTime({bucket}, 'UTC'))) * 1000 AS ts,
           up, down, degraded, error, expired, maintenance, latency
    FROM {table}
    WHERE monitor_id IN {{ids:Array(String)}}
      AND {bucket} >= {as_time}(toDateTime(intDiv({{lo:Int64}}, 1000), 'UTC'))
      AND {bucket} < {as_time}(toDateTime(intDiv({{hi:Int64}}, 1000), 'UTC'))"""


_MONTHLY_PART = _rollup_part("results_monthly", "month", "toDate")
_DAILY_PART = _rollup_part("results_daily", "day", "toDate")
_HOURLY_PART = _rollup_part("results_hourly", "hour", "")
_RAW_PART = """
    SELECT monitor_id, max(toUnixTimestamp64Milli(scheduled)) AS ts, """ + RESULT_SUMS + """
    FROM check_results FINAL
    WHERE monitor_id IN {ids:Array(String)}
      AND scheduled >= fromUnixTimestamp64Milli({lo:Int64}, 'UTC')
      AND scheduled < fromUnixTimestamp64Milli({hi:Int64}, 'UTC')
    GROUP BY monitor_id, roundDown(toUnixTimestamp64Milli(scheduled), {edges:Array(Int64)})"""
# A quantile of a merged histogram m, in ClickHouse (a year of maps for 10,000 monitors is
# too many to bring over): the bucket holding the answer of rank floor(q*n) + 1, the one
# quantileExactHigh picks, i.e. the first whose running count c has c*100 > n*Q.
_QUANTILE = ("if(n > 0, round(exp(mapKeys(m)[arrayFirstIndex(x -> x * 100 > n * {q}, c)]"
             " * log(1.01)) - 1, 3), NULL)")
_HISTOGRAM = ("sumMap(latency) AS m, arrayCumSum(mapValues(m)) AS c,"
              " arrayLast(x -> 1, c) AS n")
# A Tally's fields in its order, so that a row becomes one without a conversion in Python
# (a status page's 90 days of 1,000 monitors are 90,000 of them).
_TALLY_SUMS = ("sum(up) + sum(degraded) AS up_, sum(down) AS down_, sum(degraded) AS degraded_,"
               " sum(error) + sum(expired) AS unknown_, sum(maintenance) AS maintenance_")
_SUMMARY_SQL = f"""
SELECT monitor_id, period, up_, down_, degraded_, unknown_, maintenance_,
       {_QUANTILE.format(q=50)}, {_QUANTILE.format(q=95)}, {_QUANTILE.format(q=99)}
FROM (SELECT monitor_id, roundDown(ts, {{edges:Array(Int64)}}) AS period, {_TALLY_SUMS},
             {_HISTOGRAM}
      FROM (PARTS)
      GROUP BY monitor_id, period)
"""
# Counts alone, for figures that need no latency: merging histograms is most of a query's
# cost (about 50 ns a bucket; a year of 10,000 monitors' days holds tens of millions).
_TALLY_SQL = f"""
SELECT monitor_id, roundDown(ts, {{edges:Array(Int64)}}) AS period, {_TALLY_SUMS}
FROM (PARTS)
GROUP BY monitor_id, period
"""
# The p50 and p95 alone, of the periods with answers: a chart's points.
_LATENCY_SQL = f"""
SELECT monitor_id, period, {_QUANTILE.format(q=50)}, {_QUANTILE.format(q=95)}
FROM (SELECT monitor_id, roundDown(ts, {{edges:Array(Int64)}}) AS period, {_HISTOGRAM}
      FROM (PARTS)
      GROUP BY monitor_id, period)
WHERE n > 0
ORDER BY monitor_id, period
"""


def _union(sql: str, parts: Sequence[tuple[str, int, int]], params: dict[str, Any]) -> str:
    """`sql` with PARTS replaced by the UNION ALL of the parts whose range is not empty, their
    bounds added to `params`."""
    chosen = []
    for i, (part, lo, hi) in enumerate(parts):
        if lo < hi:
            chosen.append(part.replace("{lo:", f"{{lo{i}:").replace("{hi:", f"{{hi{i}:"))
            params[f"lo{i}"], params[f"hi{i}"] = lo, hi
    return sql.replace("PARTS", "\n    UNION ALL".join(chosen))


def _ranges(since_ms: int, until_ms: int, settled: int, by_day: bool, monthly: int = 0
            ) -> dict[str, int]:
    """Where each part of [since, until) is read: whole months [m0, m1) before `monthly` (the
    monthly rollup's mark; 0 when a period edge is not a month's start) from the monthly
    rollup, whole settled days [d0, m0) and [m1, d1) from the daily one (only when every
    period edge is a UTC midnight), whole settled hours [h0, d0) and [d1, h1) from the hourly
    one, the rest raw."""
    h0 = _ceil(since_ms, HOUR_MS)
    h1 = max(h0, min(_floor(until_ms, HOUR_MS), _floor(settled, HOUR_MS)))
    d0 = _ceil(h0, DAY_MS) if by_day else h1
    d1 = max(d0, _floor(h1, DAY_MS)) if by_day else h1
    if d0 > h1:
        d0 = d1 = h1
    m0 = _month_ceil(d0)
    m1 = max(m0, min(_month_floor(d1), _month_floor(monthly)))
    if m0 > d1:
        m0 = m1 = d1
    return {"since": since_ms, "until": until_ms, "h0": h0, "h1": h1, "d0": d0, "d1": d1,
            "m0": m0, "m1": m1}


async def _per_period(ch: ClickHouse, monitor_ids: Sequence[str], edges_ms: Sequence[int],
                      outer: str) -> tuple[dict[int, int], list[tuple[Any, ...]]]:
    """The rows of `outer` over the parts that cover [edges[0], edges[-1]), and each period's
    index by its start."""
    if len(edges_ms) < 2 or any(a >= b for a, b in pairwise(edges_ms)):
        raise ValueError("edges: at least two, increasing")
    settled = await settled_ms(ch, RESULTS)
    by_day = all(e % DAY_MS == 0 for e in edges_ms[1:-1])
    by_month = all(_month_floor(e) == e for e in edges_ms[1:-1])
    # A range shorter than a month holds no whole one: no need to ask for the mark.
    long = edges_ms[-1] - edges_ms[0] >= 28 * DAY_MS
    monthly = await settled_ms(ch, MONTHLY) if by_month and long else 0
    r = _ranges(edges_ms[0], edges_ms[-1], settled, by_day, monthly)
    params: dict[str, Any] = {"ids": list(monitor_ids), "edges": list(edges_ms)}
    sql = _union(outer, [(_MONTHLY_PART, r["m0"], r["m1"]),
                         (_DAILY_PART, r["d0"], r["m0"]), (_DAILY_PART, r["m1"], r["d1"]),
                         (_HOURLY_PART, r["h0"], r["d0"]), (_HOURLY_PART, r["d1"], r["h1"]),
                         (_RAW_PART, r["since"], r["h0"]), (_RAW_PART, r["h1"], r["until"])],
                 params)
    return {edge: i for i, edge in enumerate(edges_ms[:-1])}, await ch.rows(sql, params)


async def summaries(ch: ClickHouse, monitor_ids: Sequence[str], edges_ms: Sequence[int]
                    ) -> dict[str, list[Summary]]:
    """Per monitor, one Summary per period [edges[i], edges[i+1]), all regions summed, in one
    query for every id; every id in the answer."""
    index, rows = await _per_period(ch, monitor_ids, edges_ms, _SUMMARY_SQL)
    out = {m: [Summary() for _ in index] for m in monitor_ids}
    for monitor_id, period, *rest in rows:
        if monitor_id in out and period in index:
            out[monitor_id][index[period]] = Summary(Tally(*rest[:5]), *rest[5:])
    return out


async def period_tallies(ch: ClickHouse, monitor_ids: Sequence[str], edges_ms: Sequence[int]
                         ) -> dict[str, list[Tally]]:
    """As summaries, the checks only (no latency: a fraction of the cost)."""
    index, rows = await _per_period(ch, monitor_ids, edges_ms, _TALLY_SQL)
    out = {m: [ZERO for _ in index] for m in monitor_ids}
    for monitor_id, period, *rest in rows:
        if monitor_id in out and period in index:
            out[monitor_id][index[period]] = Tally(*rest)
    return out


async def tallies(ch: ClickHouse, monitor_ids: Sequence[str], since_ms: int, until_ms: int
                  ) -> dict[str, Tally]:
    """Checks in [since, until) per monitor, all regions summed; every id in the answer."""
    found = await period_tallies(ch, monitor_ids, [since_ms, until_ms])
    return {m: t[0] for m, t in found.items()}


def _day_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


async def daily(ch: ClickHouse, monitor_ids: Sequence[str], first: date, last: date
                ) -> dict[str, dict[date, Tally]]:
    """Checks per UTC day from `first` to `last` (both included), all regions summed; a day
    with no checks is absent."""
    days = [first + timedelta(days=i) for i in range((last - first).days + 2)]
    index, rows = await _per_period(ch, monitor_ids, [_day_ms(d) for d in days], _TALLY_SQL)
    # Straight from the rows: a status page's 1,000 monitors are 90,000 days, and a list per
    # monitor filled and then filtered took longer than the query.
    out: dict[str, dict[date, Tally]] = {m: {} for m in monitor_ids}
    for monitor_id, period, up, down, degraded, unknown, maintenance in rows:
        if monitor_id in out and (up or down or degraded or unknown or maintenance):
            out[monitor_id][days[index[period]]] = Tally(up, down, degraded, unknown,
                                                         maintenance)
    return out


async def latency_hourly(ch: ClickHouse, monitor_ids: Sequence[str], since_ms: int,
                         until_ms: int) -> dict[str, list[tuple[int, float, float]]]:
    """(hour start ms, p50, p95) of up/degraded answers per hour in [since, until), oldest
    first; an hour without answers is absent."""
    start = _floor(since_ms, HOUR_MS)
    edges = [since_ms, *range(start + HOUR_MS, until_ms, HOUR_MS), until_ms]
    _, rows = await _per_period(ch, monitor_ids, edges, _LATENCY_SQL)
    out: dict[str, list[tuple[int, float, float]]] = {m: [] for m in monitor_ids}
    for monitor_id, period, p50, p95 in rows:
        if monitor_id in out:
            out[monitor_id].append((_floor(period, HOUR_MS), p50, p95))
    return out



# --- time in each status, from confirmed status events (region '*': the monitor's) ---

# Statuses that count as the target answering: up time for uptime by time.
UP_STATUSES = ("up", "degraded")
# Statuses in which Vigil could not tell: neither up nor down.
UNKNOWN_STATUSES = ("unknown", "flapping")


@dataclass(frozen=True)
class Times:
    """Milliseconds of one period (up to now) per confirmed status; `untracked_ms` is time
    before the monitor's first status event."""

    span_ms: int
    by_status: Mapping[str, int]

    @property
    def up_ms(self) -> int:
        return sum(self.by_status.get(s, 0) for s in UP_STATUSES)

    @property
    def down_ms(self) -> int:
        return self.by_status.get("down", 0)

    @property
    def unknown_ms(self) -> int:
        return sum(self.by_status.get(s, 0) for s in UNKNOWN_STATUSES)

    @property
    def untracked_ms(self) -> int:
        return self.span_ms - sum(self.by_status.values())

    @property
    def uptime(self) -> float | None:
        """up / (up + down) by time; None: never up nor down in the period."""
        known = self.up_ms + self.down_ms
        return self.up_ms / known if known else None


_PRIOR_SQL = """
SELECT monitor_id, argMax(status, (at, event_id))
FROM status_events FINAL
WHERE monitor_id IN {ids:Array(String)} AND region = '*'
  AND at < fromUnixTimestamp64Milli({since:Int64}, 'UTC')
GROUP BY monitor_id
"""

# A monitor's first change leaves a `previous` it never entered by a change (the status a
# monitor has before its first confirmation): the time before it is untracked, not in that
# status, so the -1 of that `previous` is given back at the first change.
_FIRST_SQL = """
SELECT monitor_id, argMin(previous, (at, event_id)), toUnixTimestamp64Milli(min(at))
FROM status_events FINAL
WHERE monitor_id IN {ids:Array(String)} AND region = '*'
GROUP BY monitor_id
HAVING min(at) >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')
   AND argMin(previous, (at, event_id)) != ''
"""

_STATUS_HOURLY_PART = """
    SELECT monitor_id, status, toInt64(toUnixTimestamp(hour)) * 1000 AS ts, changes, weighted
    FROM status_hourly
    WHERE monitor_id IN {ids:Array(String)} AND region = '*'
      AND hour >= toDateTime(intDiv({lo:Int64}, 1000), 'UTC')
      AND hour < toDateTime(intDiv({hi:Int64}, 1000), 'UTC')"""
_STATUS_RAW_PART = """
    SELECT monitor_id, change.1 AS status, toUnixTimestamp64Milli(at) AS ts,
           change.2 AS changes, change.2 * toUnixTimestamp64Milli(at) AS weighted
    FROM status_events FINAL
    ARRAY JOIN [(status_events.status, toInt64(1)), (previous, toInt64(-1))] AS change
    WHERE monitor_id IN {ids:Array(String)} AND region = '*' AND change.1 != ''
      AND at >= fromUnixTimestamp64Milli({lo:Int64}, 'UTC')
      AND at < fromUnixTimestamp64Milli({hi:Int64}, 'UTC')"""
_CHANGES_SQL = """
SELECT monitor_id, status, arrayCount(e -> e <= ts, {edges:Array(Int64)}) AS period,
       sum(changes), sum(weighted)
FROM (PARTS)
GROUP BY monitor_id, status, period
"""


async def status_times(ch: ClickHouse, monitor_ids: Sequence[str], edges_ms: Sequence[int],
                       now_ms: int) -> dict[str, list[Times]]:
    """Per monitor, the time in each confirmed status in every period [edges[i], edges[i+1])
    up to `now_ms`; interior edges must be whole hours (days, weeks, months are). With s(t)
    1 while in a status, the time in it over [A, B) is s(A)*(B - A) + B*sum(delta) -
    sum(delta*t) over the changes in [A, B) (migration 0007): s at the first edge is the
    status of the latest event before it, at the next edges s plus the changes between."""
    periods = len(edges_ms) - 1
    if periods < 1 or any(a >= b for a, b in pairwise(edges_ms)):
        raise ValueError("edges: at least two, increasing")
    # Nothing after now counts: an event stamped later (a clock ahead) waits until then.
    since, until = edges_ms[0], min(edges_ms[-1], max(now_ms, edges_ms[0]))
    h0 = _ceil(since, HOUR_MS)
    h1 = max(h0, min(_floor(until, HOUR_MS), await settled_ms(ch, STATUS)))
    params: dict[str, Any] = {"ids": list(monitor_ids), "edges": list(edges_ms),
                              "since": since}
    prior = dict(await ch.rows(_PRIOR_SQL, params))
    sql = _union(_CHANGES_SQL, [(_STATUS_HOURLY_PART, h0, h1), (_STATUS_RAW_PART, since, h0),
                                (_STATUS_RAW_PART, h1, until)], params)
    # Per monitor, per period (1 the first), per status: (sum of deltas, sum of delta*t).
    sums: dict[str, dict[int, dict[str, tuple[int, int]]]] = {}
    # A range wholly after now has no part to read.
    rows = await ch.rows(sql, params) if since < until else []
    for monitor_id, status, period, changes, weighted in rows:
        sums.setdefault(monitor_id, {}).setdefault(period, {})[status] = (changes, weighted)
    for monitor_id, previous, first_ms in await ch.rows(_FIRST_SQL, params) if rows else []:
        period = bisect.bisect_right(edges_ms, first_ms)
        if monitor_id in prior or first_ms >= until or period not in sums.get(monitor_id, {}):
            continue
        n, t = sums[monitor_id][period].get(previous, (0, 0))
        sums[monitor_id][period][previous] = (n + 1, t + first_ms)
    clipped = [min(e, now_ms) for e in edges_ms]
    none: dict[int, dict[str, tuple[int, int]]] = {}
    out: dict[str, list[Times]] = {}
    # 10,000 monitors by month are 120,000 periods: most have no change, and take the short way.
    for monitor_id in monitor_ids:
        inside = {prior[monitor_id]: 1} if monitor_id in prior else {}
        found = sums.get(monitor_id, none)
        per = []
        for p in range(periods):
            a, b = clipped[p], clipped[p + 1]
            changes = found.get(p + 1)
            if changes is None:
                by_status = {s: spent for s, k in inside.items() if (spent := k * (b - a))}
            else:
                by_status = {}
                for status in inside.keys() | changes.keys():
                    n, t = changes.get(status, (0, 0))
                    k = inside.get(status, 0)
                    if spent := k * (b - a) + b * n - t:
                        by_status[status] = spent
                    inside[status] = k + n
            per.append(Times(span_ms=b - a, by_status=by_status))
        out[monitor_id] = per
    return out


# --- settling: the rollups made equal to the raw rows, one closed chunk at a time ---

# Hours re-checked behind the settled mark on every run: a redelivered batch or a late
# `expired` copy lands in the rollups (the view counts it) after its hour was settled.
LOOKBACK_MS = 48 * HOUR_MS
_CHUNK_MS = DAY_MS
_SUM_COLUMNS = ", ".join(f"sum({c}) AS {c}" for c in COUNTS)
_DIFFERS = " OR ".join(f"r.{c} != h.{c}" for c in COUNTS)

_SETTLE_RESULTS_SQL = f"""
INSERT INTO results_hourly (monitor_id, region, hour, {", ".join(COUNTS)}, latency)
SELECT monitor_id, region, hour, {", ".join(f"r.{c} - h.{c}" for c in COUNTS)},
       mapSubtract(r.latency, h.latency)
FROM (SELECT monitor_id, region, toStartOfHour(scheduled) AS hour, {RESULT_SUMS}
      FROM check_results FINAL
      WHERE scheduled >= fromUnixTimestamp64Milli({{lo:Int64}}, 'UTC')
        AND scheduled < fromUnixTimestamp64Milli({{hi:Int64}}, 'UTC')
      GROUP BY monitor_id, region, hour) AS r
FULL OUTER JOIN
     (SELECT monitor_id, region, hour, {_SUM_COLUMNS}, sumMap(latency) AS latency
      FROM results_hourly
      WHERE hour >= toDateTime(intDiv({{lo:Int64}}, 1000), 'UTC')
        AND hour < toDateTime(intDiv({{hi:Int64}}, 1000), 'UTC')
      GROUP BY monitor_id, region, hour) AS h
USING (monitor_id, region, hour)
WHERE {_DIFFERS} OR arrayExists(x -> x != 0, mapValues(mapSubtract(r.latency, h.latency)))
SETTINGS join_use_nulls = 0
"""

_SETTLE_STATUS_SQL = """
INSERT INTO status_hourly (monitor_id, region, status, hour, changes, weighted)
SELECT monitor_id, region, status, hour, r.changes - h.changes, r.weighted - h.weighted
FROM (SELECT monitor_id, region, change.1 AS status, toStartOfHour(at) AS hour,
             sum(change.2) AS changes, sum(change.2 * toUnixTimestamp64Milli(at)) AS weighted
      FROM status_events FINAL
      ARRAY JOIN [(status_events.status, toInt64(1)), (previous, toInt64(-1))] AS change
      WHERE change.1 != ''
        AND at >= fromUnixTimestamp64Milli({lo:Int64}, 'UTC')
        AND at < fromUnixTimestamp64Milli({hi:Int64}, 'UTC')
      GROUP BY monitor_id, region, status, hour) AS r
FULL OUTER JOIN
     (SELECT monitor_id, region, status, hour, sum(changes) AS changes,
             sum(weighted) AS weighted
      FROM status_hourly
      WHERE hour >= toDateTime(intDiv({lo:Int64}, 1000), 'UTC')
        AND hour < toDateTime(intDiv({hi:Int64}, 1000), 'UTC')
      GROUP BY monitor_id, region, status, hour) AS h
USING (monitor_id, region, status, hour)
WHERE r.changes != h.changes OR r.weighted != h.weighted
SETTINGS join_use_nulls = 0
"""

# The monthly rollup against the daily one it is fed from (migration 0008): the same
# comparison, r being the days summed by month.
_SETTLE_MONTHLY_SQL = f"""
INSERT INTO results_monthly (monitor_id, region, month, {", ".join(COUNTS)}, latency)
SELECT monitor_id, region, month, {", ".join(f"r.{c} - h.{c}" for c in COUNTS)},
       mapSubtract(r.latency, h.latency)
FROM (SELECT monitor_id, region, toStartOfMonth(day) AS month, {_SUM_COLUMNS},
             sumMap(latency) AS latency
      FROM results_daily
      WHERE day >= toDate(toDateTime(intDiv({{lo:Int64}}, 1000), 'UTC'))
        AND day < toDate(toDateTime(intDiv({{hi:Int64}}, 1000), 'UTC'))
      GROUP BY monitor_id, region, month) AS r
FULL OUTER JOIN
     (SELECT monitor_id, region, month, {_SUM_COLUMNS}, sumMap(latency) AS latency
      FROM results_monthly
      WHERE month >= toDate(toDateTime(intDiv({{lo:Int64}}, 1000), 'UTC'))
        AND month < toDate(toDateTime(intDiv({{hi:Int64}}, 1000), 'UTC'))
      GROUP BY monitor_id, region, month) AS h
USING (monitor_id, region, month)
WHERE {_DIFFERS} OR arrayExists(x -> x != 0, mapValues(mapSubtract(r.latency, h.latency)))
SETTINGS join_use_nulls = 0
"""

# Where each rollup's first settle starts: its raw table's oldest row.
_SETTLE = {RESULTS: (_SETTLE_RESULTS_SQL, "SELECT toUnixTimestamp64Milli(min(scheduled)), "
                     "count() FROM check_results"),
           STATUS: (_SETTLE_STATUS_SQL, "SELECT toUnixTimestamp64Milli(min(at)), count() "
                    "FROM status_events")}


async def settle(ch: ClickHouse, through_ms: int,
                 renew: Callable[[], Awaitable[object]] | None = None) -> dict[str, int]:
    """Insert, for every closed hour before `through_ms` (floored to an hour) not yet settled
    or within LOOKBACK_MS of the mark, the difference between the raw rows with FINAL and the
    rollup as signed correction rows; then record the mark. A rerun, after a crash or not,
    finds no difference and inserts nothing. One settle at a time: two at once could both
    insert the same correction. sinks/rollups.py holds a lock, which `renew` (awaited before
    every statement) keeps, or raises to stop the run once it is lost."""
    through = _floor(through_ms, HOUR_MS)
    marks = {}
    for rollup, (sql, oldest_sql) in _SETTLE.items():
        mark = await settled_ms(ch, rollup)
        if mark:
            lo = max(0, mark - LOOKBACK_MS)
        else:
            oldest, count = (await ch.rows(oldest_sql))[0]
            lo = _floor(int(oldest), HOUR_MS) if count else through
        for start in range(lo, through, _CHUNK_MS):
            if renew:
                await renew()
            await ch.command(sql, {"lo": start, "hi": min(start + _CHUNK_MS, through)})
        if through > mark:
            if renew:
                await renew()
            await ch.insert("rollups_settled",
                            [[rollup, datetime.fromtimestamp(through / 1000, UTC)]],
                            ["rollup", "through"])
        marks[rollup] = max(mark, through)
    marks[MONTHLY] = await _settle_monthly(ch, marks[RESULTS], renew)
    return marks


async def _settle_monthly(ch: ClickHouse, results_ms: int,
                          renew: Callable[[], Awaitable[object]] | None) -> int:
    """Make the months before the month of `results_ms - LOOKBACK_MS` (closed, settled, no
    longer re-checked) equal to results_daily, the last month before the mark again, the
    whole history on the first run; then record the mark. The view keeps them equal from its
    creation on, so this mostly fills in what came before it."""
    through = _month_floor(max(0, results_ms - LOOKBACK_MS))
    mark = await settled_ms(ch, MONTHLY)
    if mark:
        lo = _month_floor(max(0, mark - DAY_MS))
    else:
        oldest, count = (await ch.rows("SELECT toInt64(toUnixTimestamp(toDateTime(min(day), "
                                       "'UTC'))) * 1000, count() FROM results_daily"))[0]
        lo = _month_floor(int(oldest)) if count else through
    while lo < through:
        if renew:
            await renew()
        hi = _month_ceil(lo + DAY_MS)
        await ch.command(_SETTLE_MONTHLY_SQL, {"lo": lo, "hi": hi})
        lo = hi
    if through > mark:
        if renew:
            await renew()
        await ch.insert("rollups_settled",
                        [[MONTHLY, datetime.fromtimestamp(through / 1000, UTC)]],
                        ["rollup", "through"])
    return max(mark, through)


# --- SLA reports: periods, checks, time, incidents and latency together (api/sla.py, vigil
# report) ---

MAX_RANGE_MS = 400 * DAY_MS  # check_results' retention
PERIODS = ("day", "week", "month")
INCIDENTS_SQL = """
SELECT monitor_id, width_bucket(opened_ms, $4::bigint[]) AS period, count(*) AS opened,
       count(resolved_ms) AS resolved, coalesce(sum(duration_ms), 0) AS repair_ms
FROM incidents
WHERE monitor_id = ANY($1) AND opened_ms >= $2 AND opened_ms < $3 AND NOT maintenance
GROUP BY monitor_id, period
"""


# ClickHouse's DateTime holds 1970 to 2106: a time outside [1970, 2100) is refused here
# rather than wrapped around there.
LATEST_MS = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp() * 1000)


def moment_ms(text: str, end: bool = False) -> int:
    """An ISO 8601 date or time as epoch ms, UTC unless it says otherwise. A date alone is
    its midnight, or with `end` the next one (`to=2026-01-31` takes in all of January 31)."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            ms = _day_ms(day + timedelta(days=1) if end else day)
        else:
            moment = datetime.fromisoformat(text)
            ms = int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
                     * 1000)
    except (ValueError, OverflowError):
        raise ValueError("expected an ISO 8601 date or time, like 2026-01-31 or "
                         "2026-01-31T12:00:00Z") from None
    if not 0 <= ms < LATEST_MS:
        raise ValueError("expected a time from 1970 to 2099")
    return ms


def checked_range(since_ms: int, until_ms: int) -> None:
    """A ValueError for a range that is empty or too long; `to` is the bound at fault."""
    if until_ms <= since_ms:
        raise ValueError("must be after from")
    if until_ms - since_ms > MAX_RANGE_MS:
        raise ValueError("at most 400 days after from (the retention)")


def edges(since_ms: int, until_ms: int, by: str) -> list[int]:
    """[since, every UTC day / Monday / first of a month after it and before until, until]."""
    if by not in PERIODS:
        raise ValueError(f"by: expected one of {', '.join(PERIODS)}")
    first = datetime.fromtimestamp(since_ms / 1000, UTC).date()
    out, day = [since_ms], first + timedelta(days=1)
    while (ms := _day_ms(day)) < until_ms:
        if by == "day" or (by == "week" and day.weekday() == 0) or (by == "month"
                                                                     and day.day == 1):
            out.append(ms)
        day += timedelta(days=1)
    out.append(until_ms)
    return out


def _percent(ratio: float | None) -> float | None:
    return None if ratio is None else round(100 * ratio, 4)


def _minutes(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 60_000, 2)


def period_figures(since_ms: int, until_ms: int, summary: Summary, times: Times,
                   incidents: tuple[int, int, int], maintenance_ms: int) -> dict[str, Any]:
    """One period's figures, as the API and `vigil report` show them; `incidents`: opened
    in the period, how many of those resolved, their time to resolve summed."""
    t = summary.tally
    opened, resolved, repair_ms = incidents
    return {
        "from": datetime.fromtimestamp(since_ms / 1000, UTC).isoformat(),
        "to": datetime.fromtimestamp(until_ms / 1000, UTC).isoformat(),
        # By time: the confirmed status's intervals (status events), up = up or degraded.
        "uptime_by_time_percent": _percent(times.uptime),
        # By check count: up / (up + down) answers; Vigil's own failures are neither.
        "uptime_by_checks_percent": _percent(t.uptime),
        "downtime_minutes": _minutes(times.down_ms),
        "time_ms": {"up": times.up_ms, "down": times.down_ms,
                    # Vigil could not tell (unknown, flapping), and before any status.
                    "unknown": times.unknown_ms, "untracked": times.untracked_ms},
        "checks": {"up": t.up, "down": t.down, "degraded": t.degraded,
                   "unknown": t.unknown},
        "maintenance": {"excluded_checks": t.maintenance, "window_ms": maintenance_ms},
        "incidents": opened,
        "mttr_minutes": _minutes(repair_ms / resolved) if resolved else None,
        "latency_ms": {"p50": summary.p50, "p95": summary.p95, "p99": summary.p99},
    }


def _merged_times(times: Sequence[Times]) -> Times:
    by_status: dict[str, int] = {}
    for t in times:
        for status, ms in t.by_status.items():
            by_status[status] = by_status.get(status, 0) + ms
    return Times(span_ms=sum(t.span_ms for t in times), by_status=by_status)


async def report(ch: ClickHouse, pool: asyncpg.Pool, monitor_ids: Sequence[str],
                 since_ms: int, until_ms: int, by: str, now_ms: int,
                 windows: Mapping[str, Sequence[Window]]) -> dict[str, dict[str, Any]]:
    """Per monitor, {"periods": [...], "total": {...}} (period_figures); the same few queries for
    all ids. `windows`: the maintenance windows covering each monitor; the time they covered
    is stated beside the figures (by check count, muted checks are left out; by time, the
    confirmed status runs on through a window, as the evaluator keeps it)."""
    bounds = edges(since_ms, until_ms, by)
    ids = list(monitor_ids)
    found = await summaries(ch, ids, bounds)
    # The whole range's quantiles are not the periods' merged: one more query gives them.
    overall = await summaries(ch, ids, [since_ms, until_ms]) if len(bounds) > 2 else found
    times = await status_times(ch, ids, bounds, now_ms)
    opened: dict[tuple[str, int], tuple[int, int, int]] = {}
    for row in await pool.fetch(INCIDENTS_SQL, ids, since_ms, until_ms, bounds):
        opened[(row["monitor_id"], row["period"])] = (row["opened"], row["resolved"],
                                                      int(row["repair_ms"]))
    out = {}
    for m in ids:
        covered = [covered_ms(windows.get(m, ()), bounds[i], min(bounds[i + 1], now_ms))
                   if bounds[i] < now_ms else 0 for i in range(len(bounds) - 1)]
        periods = [period_figures(bounds[i], bounds[i + 1], found[m][i], times[m][i],
                                  opened.get((m, i + 1), (0, 0, 0)), covered[i])
                   for i in range(len(bounds) - 1)]
        runs = [opened.get((m, i + 1), (0, 0, 0)) for i in range(len(bounds) - 1)]
        total = period_figures(since_ms, until_ms, overall[m][0],
                               _merged_times(times[m]),
                               (sum(r[0] for r in runs), sum(r[1] for r in runs),
                                sum(r[2] for r in runs)), sum(covered))
        out[m] = {"periods": periods, "total": total}
    return out


async def fleet(ch: ClickHouse, pool: asyncpg.Pool, tag: str | None, since_ms: int,
                until_ms: int, by: str, now_ms: int) -> dict[str, Any]:
    """Every monitor's report (those with `tag`, if given), as `GET /api/v1/sla` answers and
    `vigil report` prints it."""
    monitors = await store.list_all(pool, tag)
    ids = [m["id"] for m in monitors]
    windows = {m: await maintenance_store.covering(pool, m) for m in ids}
    found = await report(ch, pool, ids, since_ms, until_ms, by, now_ms, windows)
    return {"from": datetime.fromtimestamp(since_ms / 1000, UTC).isoformat(),
            "to": datetime.fromtimestamp(until_ms / 1000, UTC).isoformat(), "by": by,
            "tag": tag, "monitors": [{"monitor_id": m["id"], "name": m["name"],
                                      **found[m["id"]]} for m in monitors]}
