"""Roles and DSNs on the session's embedded Postgres, for probes that must not run as its
superuser."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import asyncpg


def socket_dsn(postgres_dsn: str, user: str, password: str | None = None) -> str:
    """The session server is reached on a unix socket: `postgresql://u:p@/db?host=/dir`."""
    [socket_dir] = parse_qs(urlsplit(postgres_dsn).query)["host"]
    auth = user if password is None else f"{user}:{password}"
    return f"postgresql://{auth}@/postgres?host={socket_dir}"


def socket_path(postgres_dsn: str) -> str:
    """The socket file the session server listens on (its port is Postgres's default)."""
    [socket_dir] = parse_qs(urlsplit(postgres_dsn).query)["host"]
    return f"{socket_dir}/.s.PGSQL.5432"


@contextlib.asynccontextmanager
async def login_role(pool: asyncpg.Pool, name: str, *member_of: str) -> AsyncIterator[str]:
    """A role that can log in, no superuser, a member of `member_of`; dropped afterwards."""
    await pool.execute(f"DROP ROLE IF EXISTS {name}")
    await pool.execute(f"CREATE ROLE {name} LOGIN NOSUPERUSER")
    for role in member_of:
        await pool.execute(f"GRANT {role} TO {name}")
    try:
        yield name
    finally:
        await pool.execute(f"DROP ROLE IF EXISTS {name}")
