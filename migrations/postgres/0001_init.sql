-- Monitors: the source of truth the scheduler reads.
CREATE TABLE monitors (
    id          text PRIMARY KEY,
    name        text NOT NULL DEFAULT '',
    kind        text NOT NULL,
    interval_ms integer NOT NULL CHECK (interval_ms >= 1000),
    timeout_ms  integer NOT NULL CHECK (timeout_ms < interval_ms),
    regions     text[] NOT NULL,
    tags        text[] NOT NULL DEFAULT '{}',
    spec        jsonb NOT NULL,
    enabled     boolean NOT NULL DEFAULT true,
    source      text NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'file')),
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Schedulers LISTEN on this channel so a change reaches the schedule in milliseconds;
-- the periodic reconcile covers notifications lost while a scheduler was disconnected.
CREATE FUNCTION vigil_monitors_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('vigil_monitors', COALESCE(NEW.id, OLD.id));
    RETURN NULL;
END $$;

CREATE TRIGGER monitors_notify AFTER INSERT OR UPDATE OR DELETE ON monitors
    FOR EACH ROW EXECUTE FUNCTION vigil_monitors_notify();

-- The current status per monitor and region: a projection of the results stream that only
-- moves forward in scheduled_ms.
CREATE TABLE monitor_status (
    monitor_id    text NOT NULL,
    region        text NOT NULL,
    status        text NOT NULL,
    since_ms      bigint NOT NULL,
    check_id      text NOT NULL,
    scheduled_ms  bigint NOT NULL,
    finished_ms   bigint NOT NULL,
    latency_ms    double precision,
    status_code   integer,
    error_kind    text,
    error         text,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (monitor_id, region)
);
