-- Status pages (engine.status_pages). `definition` is the page as written (title, groups of
-- monitors by id and by tag, what each monitor shows), validated by the model before every
-- write, as for maintenance windows; `version` grows only when the definition or the source
-- changes; `source` tells pages from files (`vigil monitors apply`, which `--prune` may
-- delete) from pages made through the API. Which monitors show probe details is not here: it
-- stays each monitor's `public_details`.
CREATE TABLE status_pages (
    id          text PRIMARY KEY CHECK (length(id) <= 128),
    definition  jsonb NOT NULL CHECK (pg_column_size(definition) <= 1048576),
    source      text NOT NULL CHECK (source IN ('api', 'file')),
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
