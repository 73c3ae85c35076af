-- The Postgres projections of the events stream (sinks/incidents.py; the SQL that writes and
-- reads them is engine/incidents.py, shared by the sink, `vigil replay` and the API). Every
-- row names the event that set it, so a redelivered event changes nothing, and a row only
-- moves forward: an event older than what a row holds leaves it as it is.

-- One row per incident, id `monitor_id:opened_ms` (engine.events.Event). Opened and resolved
-- may arrive in either order (a claimed redelivery of the opening after the resolve): each
-- fills its own columns. `regions` is each region's status when it opened. An incident that
-- opened in a muted maintenance window, or folded into a dependency's (`folded_into`), was
-- not notified. `error_kind`/`error`: the first failing result's, as the opening tells;
-- `reason`: why it resolved other than by results (the monitor was removed or paused).
CREATE TABLE incidents (
    id              text PRIMARY KEY,
    monitor_id      text NOT NULL,
    opened_ms       bigint NOT NULL,
    resolved_ms     bigint,
    duration_ms     bigint GENERATED ALWAYS AS (resolved_ms - opened_ms) STORED,
    first_check_id  text,
    regions         jsonb NOT NULL DEFAULT '{}',
    folded_into     text,
    maintenance     boolean NOT NULL DEFAULT false,
    error_kind      text,
    error           text,
    reason          text,
    opened_event    text,
    resolved_event  text,
    acknowledged_by text,
    acknowledged_at timestamptz
);
CREATE INDEX incidents_by_monitor ON incidents (monitor_id, opened_ms DESC);
CREATE INDEX incidents_by_opening ON incidents (opened_ms DESC);
CREATE INDEX incidents_open ON incidents (opened_ms DESC) WHERE resolved_ms IS NULL;

-- Notes on an incident; `author` is the API token's name (or the CLI's --by).
CREATE TABLE incident_notes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id text NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    author      text NOT NULL,
    text        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX incident_notes_by_incident ON incident_notes (incident_id, id);

-- The confirmed status (after hysteresis) per monitor and region; region '*' is the
-- monitor's own status over its regions (the quorum). `since_ms` is the `at_ms` of the
-- transition that set it, `event_id` that transition's id. Unlike monitor_status (the newest
-- raw result), this is what incidents and notifications go by.
CREATE TABLE confirmed_status (
    monitor_id text NOT NULL,
    region     text NOT NULL,
    status     text NOT NULL,
    previous   text,
    since_ms   bigint NOT NULL,
    event_id   text NOT NULL,
    PRIMARY KEY (monitor_id, region)
);

-- Every status.changed and monitor.changed (region '*'), read in at_ms order.
CREATE TABLE confirmed_history (
    event_id    text PRIMARY KEY,
    monitor_id  text NOT NULL,
    region      text NOT NULL,
    at_ms       bigint NOT NULL,
    status      text NOT NULL,
    previous    text,
    check_id    text,
    maintenance boolean NOT NULL DEFAULT false
);
CREATE INDEX confirmed_history_in_order ON confirmed_history (monitor_id, region, at_ms);
