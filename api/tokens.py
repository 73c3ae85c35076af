"""API tokens: made by `vigil tokens create`, checked on every request to the monitors API."""

from __future__ import annotations

import hashlib
import secrets

import asyncpg

PREFIX = "vigil_"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create(pool: asyncpg.Pool, name: str) -> str:
    """A new token; only its digest is stored, so this is the one time it can be shown."""
    token = PREFIX + secrets.token_urlsafe(32)
    await pool.execute("INSERT INTO api_tokens (name, token_sha256) VALUES ($1, $2)",
                       name, digest(token))
    return token


async def revoke(pool: asyncpg.Pool, name: str) -> int:
    result: str = await pool.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL", name)
    return int(result.split()[-1])


async def list_all(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT name, created_at, last_used_at, revoked_at FROM api_tokens "
                            "ORDER BY id")


class TokenCheck:
    """Checks bearer tokens against Postgres on every request, so a revoked token fails on the
    very next one (the monitors API is not a hot path: one indexed read per request);
    `last_used_at` is written at most once a minute per token."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def name_of(self, token: str) -> str | None:
        name: str | None = await self.pool.fetchval(
            """WITH live AS (SELECT id, name, last_used_at FROM api_tokens
                             WHERE token_sha256 = $1 AND revoked_at IS NULL),
                    used AS (UPDATE api_tokens t SET last_used_at = now() FROM live
                             WHERE t.id = live.id AND (live.last_used_at IS NULL
                                   OR live.last_used_at < now() - interval '1 minute'))
               SELECT name FROM live""", digest(token))
        return name
