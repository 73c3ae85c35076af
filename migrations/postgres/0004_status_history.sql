-- The status of every result per monitor and region, at its slot (`expired` says nothing
-- about the target and is left out). monitor_status keeps only the newest result, so a
-- result arriving late could not be placed: `since_ms` said "down since 180 s" after down at
-- 180 s, down at 300 s and a late up at 240 s. Here every point sits in scheduled_ms order,
-- so the status sink computes since_ms as the first point of the current run of equal
-- statuses, and status_transitions below reads each transition in order. Idempotent: a
-- replayed result adds nothing, and the first result for a slot stays (as in monitor_status,
-- which only moves forward).
CREATE TABLE status_history (
    monitor_id   text NOT NULL,
    region       text NOT NULL,
    scheduled_ms bigint NOT NULL,
    status       text NOT NULL,
    PRIMARY KEY (monitor_id, region, scheduled_ms)
);

-- Each change of status, in scheduled_ms order, with the status it left (NULL for the first
-- result). Filter by monitor_id (and region): the filter reaches the window's partitions.
CREATE VIEW status_transitions AS
SELECT monitor_id, region, scheduled_ms, status, previous
FROM (SELECT monitor_id, region, scheduled_ms, status,
             lag(status) OVER (PARTITION BY monitor_id, region ORDER BY scheduled_ms) AS previous
      FROM status_history) AS points
WHERE previous IS DISTINCT FROM status;

-- What is known of the history so far: the first and the last point of each current run,
-- which is what the sink's since_ms step reads (sinks/status.py). The points before a run
-- were never kept: a result older than a run's start that arrives just after this migration
-- may extend the run back over a point of another status it cannot see.
INSERT INTO status_history (monitor_id, region, scheduled_ms, status)
SELECT monitor_id, region, since_ms, status FROM monitor_status
UNION
SELECT monitor_id, region, scheduled_ms, status FROM monitor_status;
