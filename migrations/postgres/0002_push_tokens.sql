-- Push monitors are reached at /api/v1/push/{token}: an unguessable token per monitor, made
-- when the monitor is first stored and kept across updates (config files do not carry it).
ALTER TABLE monitors ADD COLUMN push_token text UNIQUE;
