-- A revision per monitor change, drawn from one sequence. For one id it grows in commit order
-- (updates of a row queue on its lock; a re-created id is inserted after its deleted row is
-- gone), across deletes and re-creations, where `version` starts again at 1. The scheduler
-- writes a plan only over an older revision and keeps the revision of a deletion as a
-- tombstone, so a slow reconcile can neither roll a plan back nor bring a deleted monitor
-- back.
CREATE SEQUENCE monitor_revision;
ALTER TABLE monitors ADD COLUMN revision bigint NOT NULL DEFAULT nextval('monitor_revision');

CREATE FUNCTION vigil_monitors_revise() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.revision := nextval('monitor_revision');
    RETURN NEW;
END $$;

CREATE TRIGGER monitors_revise BEFORE UPDATE ON monitors
    FOR EACH ROW EXECUTE FUNCTION vigil_monitors_revise();

-- A deletion names the revision deleted: `id:revision` (monitor ids hold no colon).
CREATE OR REPLACE FUNCTION vigil_monitors_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('vigil_monitors', OLD.id || ':' || OLD.revision);
    ELSE
        PERFORM pg_notify('vigil_monitors', NEW.id);
    END IF;
    RETURN NULL;
END $$;
