-- Every confirmed status change (status.changed per region, monitor.changed with region
-- '*'), from the events stream (sinks/status_events.py): the downtime intervals SLA figures
-- are made of. A redelivered event is the same row under the same sort key (which ends in
-- the event's id), so ReplacingMergeTree folds it; read with FINAL. Small (a row per
-- transition, not per check); kept 400 days like check_results, for yearly SLA reports.
--
-- Downtime intervals of a monitor, one monitor.changed to the next (engine.incidents
-- DOWNTIME_SQL runs this; `until` NULL: still in that status):
--   SELECT monitor_id, status, at AS start, nullIf(leadInFrame(at, 1, toDateTime64(0, 3,
--          'UTC')) OVER (PARTITION BY monitor_id ORDER BY at ROWS BETWEEN CURRENT ROW AND
--          1 FOLLOWING), toDateTime64(0, 3, 'UTC')) AS until, maintenance
--   FROM status_events FINAL WHERE region = '*' AND monitor_id = {monitor_id:String}
-- and keep the rows whose status is 'down' (maintenance ones apart).
CREATE TABLE IF NOT EXISTS status_events
(
    event_id    String,
    type        LowCardinality(String),
    monitor_id  String,
    region      LowCardinality(String),
    status      LowCardinality(String),
    previous    LowCardinality(String),
    at          DateTime64(3, 'UTC'),
    check_id    String,
    maintenance Bool
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (monitor_id, region, at, event_id)
TTL toDateTime(at) + INTERVAL 400 DAY DELETE
