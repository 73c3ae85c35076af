-- Months for long ranges (a year of 10,000 monitors by month is 120,000 rows here instead of
-- 3.65 million days): the columns of results_daily per UTC month, fed from results_daily, so
-- the settle step's corrections cascade down to it too.
--
-- The history written before this migration, and anything written to results_daily between
-- this table's creation and its view's, is not copied here: the settle step
-- (engine.rollups.settle) compares closed months with results_daily and inserts the
-- difference, then records through which month this table is settled (rollups_settled,
-- rollup `monthly`). Readers take only months before that mark from here.
CREATE TABLE IF NOT EXISTS results_monthly
(
    monitor_id  String,
    region      LowCardinality(String),
    month       Date,
    up          SimpleAggregateFunction(sum, Int64),
    down        SimpleAggregateFunction(sum, Int64),
    degraded    SimpleAggregateFunction(sum, Int64),
    error       SimpleAggregateFunction(sum, Int64),
    expired     SimpleAggregateFunction(sum, Int64),
    maintenance SimpleAggregateFunction(sum, Int64),
    latency     SimpleAggregateFunction(sumMap, Map(UInt16, Int64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYear(month)
ORDER BY (monitor_id, month, region)
-- A month is read only when the whole of it is inside a range, and a range reaches back 400
-- days at most: a month that started more than 400 days ago is never read again.
TTL month + INTERVAL 400 DAY DELETE;

CREATE MATERIALIZED VIEW IF NOT EXISTS results_monthly_mv TO results_monthly AS
SELECT monitor_id, region, toStartOfMonth(day) AS month, sum(up) AS up, sum(down) AS down,
       sum(degraded) AS degraded, sum(error) AS error, sum(expired) AS expired,
       sum(maintenance) AS maintenance, sumMap(latency) AS latency
FROM results_daily
GROUP BY monitor_id, region, month
