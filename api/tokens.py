"""API tokens: made by `vigil tokens create`, checked on every request to the monitors API."""

from __future__ import annotations

import hashlib
import secrets

import asyncpg

from engine.cache import BoundedCache

PREFIX = "vigil_"
CACHE_S = 30.0
CACHE_MAX = 10_000


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
    """Checks bearer tokens against Postgres, remembering answers for CACHE_S, so a revoked
    token stops working within that time and a busy API does not query per request."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._seen: BoundedCache[str, str | None] = BoundedCache(CACHE_MAX, CACHE_S)

    async def name_of(self, token: str) -> str | None:
        key = digest(token)
        return await self._seen.get_or_load(key, lambda: self._lookup(key))

    async def _lookup(self, key: str) -> str | None:
        name: str | None = await self.pool.fetchval(
            "UPDATE api_tokens SET last_used_at = now() WHERE token_sha256 = $1 "
            "AND revoked_at IS NULL RETURNING name", key)
        return name
