"""API tokens: made by `vigil tokens create`, checked on every request that needs one.

A token has one scope, each including the ones before it: `read` (monitor definitions and
status details), `write` (create, change, pause, delete monitors), `admin` (everything; the
scope tokens made before scopes existed got). It may expire; expired or revoked, it is refused
on the very next request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal, get_args

import asyncpg

from engine.durations import parse_duration_ms

PREFIX = "vigil_"
Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)  # in order: each includes those before it
# Past ten years an expiry is a typo (or an overflow); a token that should live forever has none.
MAX_EXPIRY_MS = 3650 * 86_400_000


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def allows(granted: Scope, needed: Scope) -> bool:
    return SCOPES.index(granted) >= SCOPES.index(needed)


def expiry_ms(text: str) -> int:
    """`30d`, `12h` ... as milliseconds; a ValueError says what is accepted."""
    ms = parse_duration_ms(text)
    if not 0 < ms <= MAX_EXPIRY_MS:
        raise ValueError(f"{text!r}: expected a positive duration up to 3650d, like 30d")
    return ms


async def create(pool: asyncpg.Pool, name: str, scope: Scope,
                 expires_ms: int | None = None) -> str:
    """A new token; only its digest is stored, so this is the one time it can be shown."""
    token = PREFIX + secrets.token_urlsafe(32)
    await pool.execute(
        """INSERT INTO api_tokens (name, token_sha256, scope, expires_at)
           VALUES ($1, $2, $3, now() + $4::bigint * interval '1 millisecond')""",
        name, digest(token), scope, expires_ms)
    return token


async def revoke(pool: asyncpg.Pool, name: str) -> int:
    result: str = await pool.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL", name)
    return int(result.split()[-1])


async def list_all(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(
        """SELECT name, scope, created_at, expires_at, last_used_at, revoked_at,
                  expires_at <= now() AS expired
           FROM api_tokens ORDER BY id""")


@dataclass(frozen=True, slots=True)
class Grant:
    """What a presented token is: its name and scope, and whether it has expired."""

    name: str
    scope: Scope
    expired: bool


class TokenCheck:
    """Checks bearer tokens against Postgres on every request, so a revoked token fails on the
    very next one in every API process (the monitors API is not a hot path: one indexed read
    per request); `last_used_at` is written at most once a minute per live token."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def grant(self, token: str) -> Grant | None:
        """None for a token that is unknown or revoked."""
        row = await self.pool.fetchrow(
            """WITH live AS (SELECT id, name, scope, expires_at <= now() AS expired,
                                    last_used_at
                             FROM api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL),
                    used AS (UPDATE api_tokens t SET last_used_at = now() FROM live
                             WHERE t.id = live.id AND live.expired IS NOT TRUE
                               AND (live.last_used_at IS NULL
                                    OR live.last_used_at < now() - interval '1 minute'))
               SELECT name, scope, expired IS TRUE AS expired FROM live""", digest(token))
        return None if row is None else Grant(row["name"], row["scope"], row["expired"])
