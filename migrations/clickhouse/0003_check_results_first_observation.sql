-- ReplacingMergeTree(inserted) kept the LAST row written for a check: a late re-run's
-- `expired` replaced the `up` that was observed first. The row that stays must be the first
-- real observation: a real outcome (up, down, degraded, error) beats `expired`, and between
-- two of a kind the one that started earlier wins. `precedence` encodes that order (higher
-- stays) and is computed by the table itself (MATERIALIZED), so every writer gets the same
-- rule: the sink, an older sink during an upgrade, the history 0004 brings over. A redelivered
-- copy of a row has the same value and folds into it.
--
-- A table's version column cannot be altered, so the table is rebuilt under the same name
-- (every query, dashboard and FINAL keeps working):
-- 1. rename the old table away to check_results_before_0003. It is kept for the operator to
--    compare and then drop (DROP TABLE check_results_before_0003); its TTL empties it within
--    400 days anyway. Until 3 is done a sink's insert fails and is retried: nothing is lost;
-- 2. add `precedence` to it: metadata only, and it makes both tables' structure identical,
--    which 0004's ATTACH PARTITION ... FROM (hard links instead of a copy) requires;
-- 3. create the new table.
-- A rerun after a failure in 1, 2 or 3 carries on where it stopped (IF EXISTS, IF NOT
-- EXISTS). Only a rerun after 3 succeeded, with the version left unrecorded, fails, loudly,
-- at the rename (its target exists) and changes nothing: record version 3 by hand then.
-- Needs ClickHouse 24.4 or newer (ATTACH PARTITION ALL in 0004; docker-compose runs 24.8).
RENAME TABLE IF EXISTS check_results TO check_results_before_0003;

ALTER TABLE check_results_before_0003 ADD COLUMN IF NOT EXISTS precedence UInt64
    MATERIALIZED bitShiftLeft(toUInt64(outcome != 'expired'), 44)
                 + (toUInt64(17592186044415) - toUInt64(toUnixTimestamp64Milli(started)));

-- The same columns (AS copies them, precedence included), partitions, order and retention;
-- only the version column changes.
CREATE TABLE IF NOT EXISTS check_results AS check_results_before_0003
ENGINE = ReplacingMergeTree(precedence)
PARTITION BY toDate(scheduled)
ORDER BY (monitor_id, scheduled, check_id)
TTL toDateTime(scheduled) + INTERVAL 400 DAY DELETE
SETTINGS non_replicated_deduplication_window = 1000
