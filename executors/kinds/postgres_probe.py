"""Postgres probes: connect, run one query in a READ ONLY transaction, close.

The DSN is a `postgresql://` URL, inline (`dsn`) or, to keep a password out of monitor
definitions (they are stored in Postgres, carried on the streams and shown by the API), in an
environment variable of the executor named by `dsn_env`. The probe uses only what the DSN
says: no PGPASSWORD, no ~/.pgpass, no service file, and only the query parameters in
ALLOWED_PARAMS, so a monitor definition cannot make the executor send one of its own
credentials to another host or read a local file. `query` (default `SELECT 1`) must return
a row; READ ONLY means a probe can never write. Error kinds: `connect`, `dns`, `auth`
(a refused password or role), `query`; a silent server is the executor's `timeout`.
Messages never carry the DSN's password.
"""

from __future__ import annotations

import contextlib
import socket
import time
from urllib.parse import parse_qsl, urlsplit

import asyncpg
from pydantic import (
    Field,
    field_validator,
)

from engine.events import CheckDue, Observation
from engine.text import redact
from executors.base import (
    CLOSE_WAIT_S,
    ENV_NAME,
    ConfigProblem,
    ConnectionSpec,
    Context,
    Kind,
    down,
    failed,
    os_reason,
)

SCHEMES = ("postgresql", "postgres")
ALLOWED_PARAMS = frozenset({"host", "port", "dbname", "database", "user", "password", "sslmode",
                            "application_name", "target_session_attrs"})


def check_dsn(dsn: str) -> str:
    """The DSN if usable; a ValueError otherwise whose message never repeats the DSN."""
    try:
        parts = urlsplit(dsn)
        params = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        raise ValueError("not a valid postgresql:// URL") from None
    if parts.scheme not in SCHEMES:
        raise ValueError("expected a URL starting postgresql:// or postgres://")
    unknown = sorted({name for name, _ in params} - ALLOWED_PARAMS)
    if unknown:
        raise ValueError(f"query parameter(s) {', '.join(unknown)[:200]} not allowed in a probe; "
                         f"allowed: {', '.join(sorted(ALLOWED_PARAMS))}")
    return dsn


def _has_password(dsn: str) -> bool:
    parts = urlsplit(dsn)
    return bool(parts.password) or any(k == "password" for k, _ in parse_qsl(parts.query))


class PostgresSpec(ConnectionSpec):
    SOURCE = "dsn"

    dsn: str | None = Field(default=None, min_length=1, max_length=4096)
    dsn_env: str | None = Field(default=None, pattern=ENV_NAME)
    query: str = Field(default="SELECT 1", min_length=1, max_length=10_000)

    @field_validator("dsn")
    @classmethod
    def _usable(cls, dsn: str | None) -> str | None:
        return None if dsn is None else check_dsn(dsn)

    @staticmethod
    def check(value: str) -> str:
        return check_dsn(value)


async def _connect(dsn: str) -> asyncpg.Connection:
    # An explicit empty password stops asyncpg from falling back to PGPASSWORD or ~/.pgpass,
    # which would hand the executor's own secret to whatever host the DSN names.
    conn: asyncpg.Connection = await asyncpg.connect(
        dsn, password=None if _has_password(dsn) else "", statement_cache_size=0,
        server_settings={"application_name": "vigil-probe"})
    return conn


def _target(dsn: str) -> str:
    """Where the DSN points, for messages: `host:port` or the socket directory."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    host = query.get("host") or parts.hostname or "localhost"
    if host.startswith("/"):
        return host
    try:
        port = query.get("port") or parts.port or 5432
    except ValueError:  # several hosts, or a port that is not a number: asyncpg will say
        return host
    return f"{host}:{port}"


def _connect_failure(exc: Exception, dsn: str) -> Observation:
    if isinstance(exc, OSError) and exc.errno:
        # asyncio's "Connect call failed (addr)" or a bare "[Errno 2]": name the target instead.
        reason = exc.strerror if isinstance(exc, socket.gaierror) else os_reason(exc)
        message = redact(f"{_target(dsn)}: {reason}", dsn)
    else:
        message = redact(str(exc) or type(exc).__name__, dsn)
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return down("auth", message)  # a refused password, an unknown role, no pg_hba entry
    if isinstance(exc, socket.gaierror):
        return down("dns", message)
    if isinstance(exc, asyncpg.ClientConfigurationError):
        return failed("config", message)
    return down("connect", message)


async def check(spec: PostgresSpec, ctx: Context, due: CheckDue) -> Observation:
    try:
        dsn = spec.resolve()
    except ConfigProblem as exc:
        return failed("config", str(exc))
    start = time.perf_counter()
    try:
        conn = await _connect(dsn)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return _connect_failure(exc, dsn)
    connected = time.perf_counter()
    phases = {"connect": (connected - start) * 1000}
    try:
        async with conn.transaction(readonly=True):
            row = await conn.fetchrow(spec.query)
        done = time.perf_counter()
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        obs = down("query", redact(str(exc) or type(exc).__name__, dsn),
                   (time.perf_counter() - start) * 1000)
        obs.phases = phases
        return obs
    finally:
        # close() aborts the connection itself when it cannot finish in time.
        with contextlib.suppress(OSError, TimeoutError, asyncpg.PostgresError,
                                 asyncpg.InterfaceError):
            await conn.close(timeout=CLOSE_WAIT_S)
    phases["query"] = (done - connected) * 1000
    latency = (done - start) * 1000
    if row is None:
        obs = down("query", "the query returned no row", latency)
        obs.phases = phases
        return obs
    return Observation(outcome="up", latency_ms=latency, phases=phases)


KIND = Kind("postgres", PostgresSpec, check)
