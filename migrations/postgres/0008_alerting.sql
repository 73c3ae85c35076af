-- How a monitor's results become a confirmed status, incidents and notifications
-- (engine.monitors.Alerting): hysteresis, quorum, staleness, flapping, retries, dependencies
-- and directly attached channels. One JSON object, validated by the model; '{}' is every
-- default.
ALTER TABLE monitors ADD COLUMN alerting jsonb NOT NULL DEFAULT '{}';
