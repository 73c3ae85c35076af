"""Postgres probes: connect, check the role's privileges, run one query in a READ ONLY
transaction, close.

The DSN is a `postgresql://` URL, inline (`dsn`: a secret, sealed in Postgres and on the
streams and redacted by the API, engine.secrets) or, to keep a password out of monitor
definitions altogether, in an environment variable of the executor named by `dsn_env`. The
probe uses only what the DSN says: no PGPASSWORD, no ~/.pgpass, no service file, and only the
query parameters in ALLOWED_PARAMS, so a monitor definition cannot make the executor send one
of its own credentials to another host or read a local file but a CA bundle (sslrootcert);
the DSN cannot hold CR, LF or NUL (raw or percent-encoded), which would end a field of the
startup message. asyncpg
connects through the guard's loop (engine.guard.GuardedLoop): only to addresses and
sockets it allows.

Least privilege: READ ONLY stops writes, not reads of the server's files (`pg_read_file`),
so a role that is a superuser or a member of FILE_ROLES is refused before the query runs,
unless the monitor sets `allow_privileged: true`; statement_timeout (the check's budget) makes
the server itself stop a query that outlives the check. `query` (default `SELECT 1`) must
return a row. Error kinds: `connect`, `dns`, `auth` (a refused password or role), the tls
kind's `tls_untrusted`, `tls_expired`, `tls_hostname` (else `tls`) for a refused handshake,
`query`; `error` `privileged` for a refused role; a silent server is the executor's `timeout`.
Messages never carry the DSN's password, and a query's error is cut to QUERY_ERROR_MAX (it
may quote what the query read).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from typing import Annotated, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import asyncpg
from pydantic import (
    AfterValidator,
    Field,
    field_validator,
)

from engine.events import CheckDue, Observation
from engine.guard import GuardedLoop, os_reason
from engine.resolver import ResolveError
from engine.secrets import Secret
from engine.text import clip, redact
from executors.base import (
    CLOSE_WAIT_S,
    ENV_NAME,
    ConfigProblem,
    ConnectionSpec,
    Context,
    Kind,
    budget_s,
    down,
    failed,
    single_line,
)
from executors.certs import verify_kind

SCHEMES = ("postgresql", "postgres")
# sslrootcert: the CA bundle a private or cloud CA needs (RDS, Cloud SQL); it is read as
# certificates only and sends nothing, unlike sslcert/sslkey, the executor's own credentials.
ALLOWED_PARAMS = frozenset({"host", "port", "dbname", "database", "user", "password", "sslmode",
                            "sslrootcert", "application_name", "target_session_attrs"})
# Roles that read or write the server's files or run programs on it.
FILE_ROLES = ("pg_read_server_files", "pg_write_server_files", "pg_execute_server_program")
QUERY_ERROR_MAX = 200
# Membership of any kind counts: a role that may SET ROLE to one of them has its powers.
_PRIVILEGES = """
SELECT rolname, rolsuper,
       ARRAY(SELECT r FROM unnest($1::text[]) AS r
             WHERE to_regrole(r) IS NOT NULL AND pg_has_role(current_user, r, 'MEMBER'))
FROM pg_roles WHERE rolname = current_user
"""


def check_dsn(dsn: str) -> str:
    """The DSN if usable; a ValueError otherwise whose message never repeats the DSN."""
    try:
        parts = urlsplit(dsn)
        params = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        raise ValueError("not a valid postgresql:// URL") from None
    if parts.scheme not in SCHEMES:
        raise ValueError("expected a URL starting postgresql:// or postgres://")
    single_line(unquote(dsn))
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

    # Checked inside Secret(): REDACTED (keep the stored one) skips the check (engine.secrets).
    dsn: Annotated[str | None, Field(min_length=1, max_length=4096),
                   AfterValidator(lambda v: None if v is None else check_dsn(v)), Secret()] = None
    dsn_env: str | None = Field(default=None, pattern=ENV_NAME)
    query: str = Field(default="SELECT 1", min_length=1, max_length=10_000)
    # Run the query as a superuser or a member of FILE_ROLES; None (not set) refuses them.
    allow_privileged: bool | None = None

    @field_validator("query")
    @classmethod
    def _no_nul(cls, query: str) -> str:
        # The protocol ends a query string at NUL; CR and LF are SQL's own whitespace.
        if "\0" in query:
            raise ValueError("cannot hold NUL")
        return query

    @staticmethod
    def check(value: str) -> str:
        return check_dsn(value)


async def _connect(dsn: str, ctx: Context, timeout_ms: int) -> asyncpg.Connection:
    # An explicit empty password stops asyncpg from falling back to PGPASSWORD or ~/.pgpass,
    # which would hand the executor's own secret to whatever host the DSN names.
    conn: asyncpg.Connection = await asyncpg.connect(
        dsn, password=None if _has_password(dsn) else "", statement_cache_size=0,
        server_settings={"application_name": "vigil-probe",
                         "statement_timeout": str(timeout_ms)},
        # Duck-typed: every loop method but the two connects is the running loop's.
        loop=cast(asyncio.AbstractEventLoop, GuardedLoop(ctx.guard, ctx.resolver)))
    return conn


async def _refusal(conn: asyncpg.Connection) -> str | None:
    """Why the probe's role may not run a monitor's query, or None."""
    row = await conn.fetchrow(_PRIVILEGES, list(FILE_ROLES))
    if row is None:
        return None
    role, superuser, members = row
    too_much = "a superuser" if superuser else (
        f"a member of {', '.join(members)}" if members else None)
    if too_much is None:
        return None
    return (f"refused: the probe's role {role} is {too_much}, so a query could read the "
            "server's files; give the probe a role without that, or set "
            "allow_privileged: true")


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
        message = redact(f"{_target(dsn)}: {os_reason(exc)}", dsn)
    else:
        message = redact(str(exc) or type(exc).__name__, dsn)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return down(verify_kind(exc), message)
    if isinstance(exc, ssl.SSLError):
        return down("tls", message)
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return down("auth", message)  # a refused password, an unknown role, no pg_hba entry
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
        conn = await _connect(dsn, ctx, max(1, int(budget_s(due) * 1000)))
    except ResolveError as exc:
        return down("dns", redact(str(exc), dsn))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return _connect_failure(exc, dsn)
    connected = time.perf_counter()
    phases = {"connect": (connected - start) * 1000}
    try:
        async with conn.transaction(readonly=True):
            refusal = None if spec.allow_privileged else await _refusal(conn)
            if refusal is not None:
                return failed("privileged", refusal)
            row = await conn.fetchrow(spec.query)
        done = time.perf_counter()
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        obs = down("query", clip(redact(str(exc) or type(exc).__name__, dsn), QUERY_ERROR_MAX),
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
