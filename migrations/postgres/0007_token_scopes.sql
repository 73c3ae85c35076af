-- Token scopes (read < write < admin, each including the ones before it) and an optional
-- expiry. Tokens made before scopes existed could do everything: they become admin. New tokens
-- must name their scope (the default is dropped once the old rows have it).
ALTER TABLE api_tokens
    ADD COLUMN scope text NOT NULL DEFAULT 'admin' CHECK (scope IN ('read', 'write', 'admin')),
    ADD COLUMN expires_at timestamptz;
ALTER TABLE api_tokens ALTER COLUMN scope DROP DEFAULT;
