"""Redis probes: connect (with AUTH and SELECT when the URL asks), PING, close.

The URL is `redis://`, `rediss://` (TLS) or `unix://`, inline (`url`: a secret, sealed and
redacted, engine.secrets) or, to keep a password out of monitor definitions altogether, in an
environment variable of the executor named by `url_env`.
Only the query parameters in ALLOWED_PARAMS are accepted, so a monitor definition cannot
point the executor at local files (redis-py takes key and certificate paths from the URL).
No command of the monitor's reaches the server: the probe sends AUTH, SELECT and PING, each
argument a length-prefixed RESP string, and the URL cannot hold CR, LF or NUL, raw or
percent-encoded. The socket goes to an address the guard checked (engine.guard); redis-py
keeps the URL's host for TLS. One connection per check, no retry, no client-side timeouts:
the executor's timeout bounds the check, and a retry would hide exactly the failures a probe
is for. Error kinds: `connect`, `dns`, `auth` (a wrong password, or one missing), `query`; a
silent server is the executor's `timeout`. Messages never carry the URL's password.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import (
    AfterValidator,
    Field,
)
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection, parse_url
from redis.exceptions import AuthenticationError, RedisError

from engine.events import CheckDue, Observation
from engine.resolver import ResolveError
from engine.secrets import Secret
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
    single_line,
)

SCHEMES = ("redis", "rediss", "unix")
ALLOWED_PARAMS = frozenset({"db", "username", "password"})
TLS_PARAMS = frozenset({"ssl_cert_reqs"})


def check_url(url: str) -> str:
    """The URL if usable; a ValueError otherwise whose message never repeats the URL."""
    try:
        parts = urlsplit(url)
        params = {name for name, _ in parse_qsl(parts.query, keep_blank_values=True)}
    except ValueError:
        raise ValueError("not a valid redis:// URL") from None
    if parts.scheme not in SCHEMES:
        raise ValueError("expected a URL starting redis://, rediss:// or unix://")
    single_line(unquote(url))
    allowed = ALLOWED_PARAMS | (TLS_PARAMS if parts.scheme == "rediss" else frozenset())
    unknown = sorted(params - allowed)
    if unknown:
        raise ValueError(f"query parameter(s) {', '.join(unknown)[:200]} not allowed in a probe; "
                         f"allowed: {', '.join(sorted(allowed))}")
    try:
        parse_url(url)
    except ValueError:
        raise ValueError("not a valid redis:// URL (a port or db that is not a number?)") from None
    return url


class RedisSpec(ConnectionSpec):
    SOURCE = "url"

    # Checked inside Secret(): REDACTED (keep the stored one) skips the check (engine.secrets).
    url: Annotated[str | None, Field(min_length=1, max_length=4096),
                   AfterValidator(lambda v: None if v is None else check_url(v)), Secret()] = None
    url_env: str | None = Field(default=None, pattern=ENV_NAME)

    @staticmethod
    def check(value: str) -> str:
        return check_url(value)


class _AtAddress(Connection):
    """A TCP connection whose socket goes to one checked address, `ip`, where redis-py would
    resolve the URL's host again; the host stays the name in messages and, over TLS, in SNI
    and the certificate check."""

    def __init__(self, *, ip: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ip = ip

    def _connection_arguments(self) -> Mapping[str, Any]:
        args = dict(super()._connection_arguments())
        if args.get("ssl"):
            args["server_hostname"] = args["host"]
        args["host"] = self.ip
        return args


class _TlsAtAddress(_AtAddress, SSLConnection):
    pass


async def _open(url: str, ctx: Context) -> AbstractConnection:
    """A connected connection for `url`: to its unix socket, or to the first of its host's
    checked addresses that takes it (a refusal of AUTH by the server itself ends the tries).
    RESP2 and driver_info=None: plain AUTH/SELECT then PING, which every Redis and every
    Redis-compatible server answers (HELLO needs Redis 6; CLIENT SETINFO adds round trips)."""
    kwargs: dict[str, Any] = {**parse_url(url), "socket_timeout": None,
                              "socket_connect_timeout": None, "driver_info": None,
                              "protocol": 2}
    cls: type[AbstractConnection] = kwargs.pop("connection_class", Connection)
    if "path" in kwargs:
        ctx.guard.check_path(kwargs["path"])
        candidates = [cls(**kwargs)]
    else:
        addresses, _ = await ctx.guard.resolve(ctx.resolver, kwargs.get("host", "localhost"),
                                               int(kwargs.get("port", 6379)))
        pinned = _TlsAtAddress if issubclass(cls, SSLConnection) else _AtAddress
        candidates = [pinned(ip=ip, **kwargs) for _, ip in addresses]
    failure: Exception | None = None
    for conn in candidates:
        try:
            await conn.connect()  # type: ignore[no-untyped-call]  # redis-py leaves it bare
            return conn
        except AuthenticationError:
            await _close(conn)
            raise
        except (RedisError, OSError) as exc:
            await _close(conn)
            failure = exc
    assert failure is not None, "a resolved host has an address"
    raise failure


def _connect_failure(exc: Exception, url: str) -> Observation:
    message = redact(str(exc) or type(exc).__name__, url)
    return down("auth" if isinstance(exc, AuthenticationError) else "connect", message)


async def _close(conn: AbstractConnection) -> None:
    with contextlib.suppress(RedisError, OSError, TimeoutError):
        async with asyncio.timeout(CLOSE_WAIT_S):
            await conn.disconnect()


async def check(spec: RedisSpec, ctx: Context, due: CheckDue) -> Observation:
    try:
        url = spec.resolve()
    except ConfigProblem as exc:
        return failed("config", str(exc))
    start = time.perf_counter()
    try:
        conn = await _open(url, ctx)
    except ResolveError as exc:
        return down("dns", redact(str(exc), url))
    except (RedisError, OSError) as exc:
        return _connect_failure(exc, url)
    try:
        connected = time.perf_counter()
        phases = {"connect": (connected - start) * 1000}
        try:
            await conn.send_command("PING")
            reply = await conn.read_response()
        except AuthenticationError as exc:  # NOAUTH: the server wants a password
            obs = down("auth", redact(str(exc), url), (time.perf_counter() - start) * 1000)
        except (RedisError, OSError) as exc:
            obs = down("query", redact(str(exc) or type(exc).__name__, url),
                       (time.perf_counter() - start) * 1000)
        else:
            done = time.perf_counter()
            phases["query"] = (done - connected) * 1000
            if reply in (b"PONG", "PONG"):
                return Observation(outcome="up", latency_ms=(done - start) * 1000,
                                   phases=phases)
            obs = down("query", f"PING answered {reply!r:.100}", (done - start) * 1000)
        obs.phases = phases
        return obs
    finally:
        await _close(conn)


KIND = Kind("redis", RedisSpec, check)
