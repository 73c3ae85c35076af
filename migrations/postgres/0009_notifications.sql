-- Notifications (notifier/, engine/channels.py): channels, the outbox of deliveries with every
-- attempt, and the alerts each channel was sent and has not yet had the end of.
CREATE TABLE channels (
    id              text PRIMARY KEY,
    name            text NOT NULL DEFAULT '',
    kind            text NOT NULL CHECK (kind IN ('apprise', 'webhook')),
    -- Sealed (engine.secrets): an apprise URL holds its service's credentials, a webhook
    -- URL often a token.
    url             text NOT NULL,
    -- Sealed `whsec_...` of a webhook channel; null for apprise.
    secret          text,
    events          text[] NOT NULL,
    tags            text[] NOT NULL DEFAULT '{}',
    resend_every_ms bigint CHECK (resend_every_ms > 0),
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- One row per message and channel. `key` is the idempotency key, a function of the event's
-- id and the channel's: the notifier inserts with ON CONFLICT DO NOTHING, so an event read
-- twice gives one row, and every attempt carries the same key to the receiver.
CREATE TABLE deliveries (
    key          text PRIMARY KEY,
    channel_id   text NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    event_id     text NOT NULL,
    message      text NOT NULL,
    monitor_id   text,
    payload      jsonb NOT NULL,
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'sending', 'sent', 'dead', 'folded')),
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    due_at       timestamptz NOT NULL DEFAULT now(),
    lease_until  timestamptz,
    leased_by    text,
    -- The storm guard's summary this one was sent in (state folded).
    folded_into  text,
    last_error   text,
    last_status  integer,
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz
);
CREATE INDEX deliveries_due ON deliveries (due_at) WHERE state = 'pending';
CREATE INDEX deliveries_leases ON deliveries (lease_until) WHERE state = 'sending';
CREATE INDEX deliveries_recent ON deliveries (created_at);
CREATE INDEX deliveries_event ON deliveries (event_id);

CREATE TABLE delivery_attempts (
    key         text NOT NULL REFERENCES deliveries (key) ON DELETE CASCADE,
    n           integer NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    error       text,
    http_status integer,
    PRIMARY KEY (key, n)
);

-- An alert a channel was sent (a down, degraded, flapping or monitoring-degraded message)
-- whose end it must get too: the resolve goes to exactly these channels, whatever routing,
-- maintenance or restarts happen in between. `subject` is the incident id for an incident,
-- '' for the others (a monitor has at most one of each open). Reminders count here.
CREATE TABLE open_alerts (
    monitor_id       text NOT NULL,
    alert            text NOT NULL CHECK (alert IN ('incident', 'degraded', 'flapping',
                                                    'monitoring')),
    channel_id       text NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    subject          text NOT NULL,
    opened           jsonb NOT NULL,
    reminders        integer NOT NULL DEFAULT 0,
    next_reminder_at timestamptz,
    PRIMARY KEY (monitor_id, alert, channel_id)
);
CREATE INDEX open_alerts_reminders ON open_alerts (next_reminder_at)
    WHERE next_reminder_at IS NOT NULL;
