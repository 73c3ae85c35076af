-- API tokens for writes: only a SHA-256 of each token is kept (tokens are 256 random bits,
-- so a fast hash is enough); the token itself is printed once by `vigil tokens create`.
CREATE TABLE api_tokens (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL,
    token_sha256 text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
