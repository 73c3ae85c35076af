-- Rollups for SLA and uptime figures (engine/rollups.py reads them): per monitor, region and
-- hour (and day) the checks by outcome and a latency histogram; per monitor, region and hour
-- the status changes that give time in each status. A year for 10,000 monitors is a few
-- million rollup rows instead of billions of results.
--
-- A materialized view sees every insert, so a row check_results later folds (a redelivered
-- batch; an `expired` row and the late real result, `precedence` keeping one) is counted
-- twice here. Every column is therefore a plain sum, signed: the settle step
-- (sinks/rollups.py, engine.rollups.settle) compares closed hours with check_results FINAL
-- and inserts the difference as correction rows, then records through which hour the rollups
-- are settled (rollups_settled). Readers take settled hours from the rollups and the rest
-- from the raw rows with FINAL, so every figure equals the raw one whether or not the settle
-- step has run. Latency is a histogram (bucket -> count, a sumMap) rather than a quantile
-- state, because a state cannot be corrected by a signed row and a histogram can; it merges
-- exactly over hours, days and regions, and its buckets are 1% wide (engine.rollups.BUCKET).
--
-- History from before this migration is not copied here: the settle step's first run finds
-- those hours missing and inserts them as corrections, day by day.
CREATE TABLE IF NOT EXISTS results_hourly
(
    monitor_id  String,
    region      LowCardinality(String),
    hour        DateTime('UTC'),
    up          SimpleAggregateFunction(sum, Int64),
    down        SimpleAggregateFunction(sum, Int64),
    degraded    SimpleAggregateFunction(sum, Int64),
    error       SimpleAggregateFunction(sum, Int64),
    expired     SimpleAggregateFunction(sum, Int64),
    maintenance SimpleAggregateFunction(sum, Int64),
    latency     SimpleAggregateFunction(sumMap, Map(UInt16, Int64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (monitor_id, hour, region)
TTL hour + INTERVAL 400 DAY DELETE;

-- The outcome columns leave maintenance checks out (they have their own count); the
-- histogram holds up and degraded answers outside maintenance. engine.rollups.RESULT_SUMS is
-- the same expression list, for raw rows and the settle step: change both together. Columns
-- are named with their table where an alias of the same name would shadow them.
CREATE MATERIALIZED VIEW IF NOT EXISTS results_hourly_mv TO results_hourly AS
SELECT monitor_id, region, toStartOfHour(scheduled) AS hour,
       toInt64(countIf(outcome = 'up' AND NOT check_results.maintenance)) AS up,
       toInt64(countIf(outcome = 'down' AND NOT check_results.maintenance)) AS down,
       toInt64(countIf(outcome = 'degraded' AND NOT check_results.maintenance)) AS degraded,
       toInt64(countIf(outcome = 'error' AND NOT check_results.maintenance)) AS error,
       toInt64(countIf(outcome = 'expired' AND NOT check_results.maintenance)) AS expired,
       toInt64(countIf(check_results.maintenance)) AS maintenance,
       sumMapIf(map(toUInt16(round(log1p(if(isFinite(ifNull(latency_ms, 0)),
                                            greatest(ifNull(latency_ms, 0), 0), 0))
                                   / log(1.01))), toInt64(1)),
                outcome IN ('up', 'degraded') AND NOT check_results.maintenance
                AND latency_ms IS NOT NULL)
           AS latency
FROM check_results
GROUP BY monitor_id, region, hour;

-- Days for long ranges, fed from the hourly table, so the settle step's corrections reach it
-- too.
CREATE TABLE IF NOT EXISTS results_daily
(
    monitor_id  String,
    region      LowCardinality(String),
    day         Date,
    up          SimpleAggregateFunction(sum, Int64),
    down        SimpleAggregateFunction(sum, Int64),
    degraded    SimpleAggregateFunction(sum, Int64),
    error       SimpleAggregateFunction(sum, Int64),
    expired     SimpleAggregateFunction(sum, Int64),
    maintenance SimpleAggregateFunction(sum, Int64),
    latency     SimpleAggregateFunction(sumMap, Map(UInt16, Int64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYear(day)
ORDER BY (monitor_id, day, region)
TTL day + INTERVAL 400 DAY DELETE;

CREATE MATERIALIZED VIEW IF NOT EXISTS results_daily_mv TO results_daily AS
SELECT monitor_id, region, toDate(hour) AS day, sum(up) AS up, sum(down) AS down,
       sum(degraded) AS degraded, sum(error) AS error, sum(expired) AS expired,
       sum(maintenance) AS maintenance, sumMap(latency) AS latency
FROM results_hourly
GROUP BY monitor_id, region, day;

-- Time in each status. With s(t) = 1 while a monitor is in `status` and an event at t_e
-- changing s by delta_e (+1 entering the status, -1 leaving it), the time in the status over
-- [A, B) is s(A)*(B - A) + B*sum(delta) - sum(delta*t_e) over the events in [A, B), and
-- s(A) is the sum of every delta before A. Per hour: `changes` = sum(delta), `weighted` =
-- sum(delta * t_e in ms).
CREATE TABLE IF NOT EXISTS status_hourly
(
    monitor_id String,
    region     LowCardinality(String),
    status     LowCardinality(String),
    hour       DateTime('UTC'),
    changes    SimpleAggregateFunction(sum, Int64),
    weighted   SimpleAggregateFunction(sum, Int64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (monitor_id, region, status, hour)
TTL hour + INTERVAL 400 DAY DELETE;

CREATE MATERIALIZED VIEW IF NOT EXISTS status_hourly_mv TO status_hourly AS
SELECT monitor_id, region, change.1 AS status, toStartOfHour(at) AS hour,
       sum(change.2) AS changes, sum(change.2 * toUnixTimestamp64Milli(at)) AS weighted
FROM status_events
ARRAY JOIN [(status_events.status, toInt64(1)), (previous, toInt64(-1))] AS change
WHERE change.1 != ''
GROUP BY monitor_id, region, status, hour;

-- Through which hour (exclusive) each rollup equals its raw rows; the newest row counts.
CREATE TABLE IF NOT EXISTS rollups_settled
(
    rollup  LowCardinality(String),
    through DateTime('UTC'),
    at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (rollup, at)
TTL toDateTime(at) + INTERVAL 30 DAY DELETE
