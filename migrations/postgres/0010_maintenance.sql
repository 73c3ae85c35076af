-- Maintenance windows (engine.maintenance). `definition` is the window as written, validated
-- by the model before every write (one validator, for the API and the files alike); the
-- columns beside it are bookkeeping. `version` grows only when the definition or the source
-- changes; `source` tells windows from files (`vigil monitors apply`, which `--prune` may
-- delete) from windows made through the API. The checks bound what a writer that skips the
-- model could store.
CREATE TABLE maintenance_windows (
    id          text PRIMARY KEY CHECK (length(id) <= 128),
    definition  jsonb NOT NULL CHECK (pg_column_size(definition) <= 65536),
    source      text NOT NULL CHECK (source IN ('api', 'file')),
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
