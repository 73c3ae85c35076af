-- Whether a result was checked inside a muted maintenance window (engine.maintenance): kept
-- with the result, so uptime and SLA figures can leave it out and say how much they left out.
-- Rows written before this migration were never in one (the default).
ALTER TABLE check_results ADD COLUMN IF NOT EXISTS maintenance Bool DEFAULT false
