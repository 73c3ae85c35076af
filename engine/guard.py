"""Where no check and no notification may connect: a monitor or a channel cannot turn Vigil on
itself or on the cloud's metadata. On the ground floor, as two roles use it: the executors for
checks, the notifier for channel URLs (notifier.transports).

Checked after name resolution, at connect time: a check resolves its target once (the
executor's Resolver), every address is checked, and the socket goes to a checked IP literal;
no library resolves the name again, so DNS rebinding (one answer for the check, another for the
connect) cannot get past it. TLS keeps the name for SNI and the certificate. A webhook goes the
same way; apprise resolves a name again itself (notifier.transports). Denied:
- Vigil's own Redis, Postgres and ClickHouse: the addresses and unix sockets of the settings'
  URLs, a host name in them resolved when the role starts. When one listens on this host,
  its port is denied on every address that reaches this host: 127.0.0.2, 0.0.0.0,
  ::ffff:127.0.0.1 or the host's own address reach a server bound to 127.0.0.1 or 0.0.0.0;
- link-local and cloud metadata addresses (FIXED);
- VIGIL_DENY_TARGETS.
VIGIL_ALLOW_TARGETS wins over all of them, for operators who probe their own infrastructure.
IPv4-mapped IPv6 addresses are checked as the IPv4 address they reach. A denied check is an
`error` with kind `denied` that names the rule (executors.checker), a denied notification a
failed attempt that names it (notifier.sender), and no socket is opened.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import structlog
from redis.asyncio.connection import parse_url

from engine.cache import MISS, BoundedCache
from engine.connections import cluster_seed
from engine.resolver import Address, Resolver
from engine.settings import Settings, Target

T = TypeVar("T")
IP = ipaddress.IPv4Address | ipaddress.IPv6Address
ALLOW_HINT = "allow it with VIGIL_ALLOW_TARGETS"
VERDICTS_MAX = 10_000
VERDICT_TTL_S = 60.0
REFRESH_S = 60.0
log = structlog.get_logger(component="guard")


class Denied(Exception):
    """The target is on the deny list; nothing was opened. The message names the rule."""


class ConnectError(OSError):
    """No address took the connection; the message says why for each. An OSError, so a library
    connecting through GuardedLoop tries its next host as after any failed connect."""


def os_reason(exc: OSError) -> str:
    """Why a socket call failed, in the errno's words: asyncio words a refusal as "Connect call
    failed (addr)" and uvloop as the errno text; the errno reads the same on both loops. An
    SSLError is an OSError whose errno is OpenSSL's (1 would read "Operation not permitted"):
    it is told by its own reason."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc.verify_message or str(exc)
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return os.strerror(exc.errno) if exc.errno else (str(exc) or type(exc).__name__)


@dataclass(frozen=True, slots=True)
class Rule:
    target: Target
    reason: str  # completes "denied: <where> ...": "is Vigil's own Redis (VIGIL_REDIS_URL)"
    # The target is on this host: its port is denied on every address that reaches this host.
    this_host: bool = False

    def matches(self, ip: IP, port: int | None) -> bool:
        """`port` None (ICMP) meets only rules for a whole network."""
        network, wanted = self.target.network, self.target.port
        if network is None or (wanted is not None and wanted != port):
            return False
        return _reaches_this_host(ip) if self.this_host else ip in network


FIXED = tuple(Rule(Target(ipaddress.ip_network(net)), reason) for net, reason in (
    ("169.254.0.0/16", "is link-local (169.254.0.0/16), where cloud metadata services answer"),
    ("fe80::/10", "is IPv6 link-local (fe80::/10)"),
    ("fd00:ec2::254/128", "is the AWS metadata service over IPv6"),
    ("100.100.100.200/32", "is the Alibaba Cloud metadata service"),
))


def _ip(text: str) -> IP:
    """An address as it is reached: no zone, an IPv4-mapped IPv6 address as its IPv4 one."""
    ip = ipaddress.ip_address(text.partition("%")[0])
    return ip.ipv4_mapped or ip if isinstance(ip, ipaddress.IPv6Address) else ip


def _reaches_this_host(ip: IP) -> bool:
    if ip.is_loopback or ip.is_unspecified:  # Linux connects 0.0.0.0 and :: to this host
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    # Only an address of one of this host's interfaces can be bound.
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((str(ip), 0))
        except OSError:
            return False
    return True


def _where(ip: IP, port: int | None) -> str:
    if port is None:
        return str(ip)
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def _own_endpoints(settings: Settings) -> list[tuple[str, int | None, str]]:
    """(host, address or socket path; port or None for a path; what it is) of every server
    Vigil itself uses, as its clients read the settings' URLs."""
    out: list[tuple[str, int | None, str]] = []
    # A cluster's URL names its seed node (the one node the settings know).
    redis = parse_url(cluster_seed(settings.redis_url) or settings.redis_url)
    what = "Vigil's own Redis (VIGIL_REDIS_URL)"
    if "path" in redis:
        out.append((redis["path"], None, what))
    else:
        out.append((redis.get("host", "localhost"), int(redis.get("port", 6379)), what))
    what = "Vigil's own Postgres (VIGIL_POSTGRES_DSN)"
    out += [(host, port, what) for host, port in _postgres_hosts(settings.postgres_dsn)]
    ch = urlsplit(settings.clickhouse_url)
    if ch.scheme in ("http", "https"):  # chdb:// is in this process, not at an address
        # clickhouse-connect's default ports
        port = ch.port or (8443 if ch.scheme == "https" else 8123)
        out.append((ch.hostname or "localhost", port, "Vigil's own ClickHouse "
                                                      "(VIGIL_CLICKHOUSE_URL)"))
    return out


def _postgres_hosts(dsn: str) -> list[tuple[str, int | None]]:
    """As asyncpg reads a DSN: the URL's hosts (`h1:5432,h2`), else its `host` parameter, else
    PGHOST, else its default socket directories and localhost; the port of each is its own, or
    the `port` parameter (one, or one per host), PGPORT or 5432. A socket directory gives its
    socket file (None for its port)."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    hosts = (parts.netloc.rpartition("@")[2] or query.get("host") or os.environ.get("PGHOST")
             or "/run/postgresql,/var/run/postgresql,/tmp,localhost").split(",")
    ports = (query.get("port") or os.environ.get("PGPORT") or "5432").split(",")
    out: list[tuple[str, int | None]] = []
    for index, item in enumerate(map(unquote, hosts)):
        port = ports[index] if index < len(ports) else ports[0]
        if item.startswith("/"):
            out.append((os.path.join(item, f".s.PGSQL.{port}"), None))
        elif item.startswith("["):
            host, _, given = item[1:].partition("]")
            out.append((host, int(given.removeprefix(":") or port)))
        else:
            host, _, given = item.partition(":")
            out.append((host, int(given or port)))
    return out


Lookup = Callable[[str, int], Awaitable[list[Any]]]


async def _getaddrinfo(host: str, port: int) -> list[Any]:
    return await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)


class Guard:
    """The deny list of one executor or notifier, built from its settings (Vigil's defaults
    when none are given); `start` and then `refresh`, every REFRESH_S, add the addresses of
    Vigil's own servers that the settings name by a host name."""

    def __init__(self, settings: Settings | None = None,
                 lookup: Lookup = _getaddrinfo,
                 nodes: Callable[[], Awaitable[list[tuple[str, int]]]] | None = None) -> None:
        """`nodes`: the nodes of Vigil's own Redis Cluster beyond the seed the settings name
        (engine.connections.cluster_nodes of the role's client), read at every refresh: a
        check must reach none of them, and a node added later is denied within REFRESH_S."""
        settings = settings or Settings()
        self._lookup = lookup
        self._nodes = nodes
        self._unresolved: set[str] = set()
        self._started = False
        self.deny: list[Rule] = [*FIXED, *(Rule(t, f"is in VIGIL_DENY_TARGETS ({t})")
                                           for t in settings.deny_targets)]
        self.allow = settings.allow_targets
        self._allowed_paths = {os.path.realpath(t.path) for t in self.allow if t.path}
        self._names: list[tuple[str, int, str]] = []
        # An address that becomes this host's (a new interface) is judged again within the TTL.
        self._verdicts: BoundedCache[tuple[str, int | None], str | None] = BoundedCache(
            VERDICTS_MAX, VERDICT_TTL_S)
        for host, port, what in _own_endpoints(settings):
            if port is None:
                self.deny.append(Rule(Target(path=os.path.realpath(host)), f"is {what}"))
            elif _address(host) is None:
                self._names.append((host, port, what))
            else:
                self.deny.append(_own(_ip(host), port, what))

    async def start(self) -> None:
        """Resolve the host names of Vigil's own servers as the executor or notifier starts."""
        await self.refresh()
        log.info("no check or notification may connect to these targets",
                 denied=[str(r.target) for r in self.deny], allowed=[str(t) for t in self.allow])

    async def refresh(self) -> None:
        """Resolve the host names of Vigil's own servers again (at start, then every
        REFRESH_S): a managed Redis that fails over to a new address is denied there too, and
        the addresses it had stay denied."""
        named = list(self._names)
        what = "a node of Vigil's own Redis Cluster (VIGIL_REDIS_URL)"
        for host, port in await self._nodes() if self._nodes else ():
            if _address(host) is None:
                named.append((host, port, what))
            else:
                self._add({_own(_ip(host), port, what)}, host)
        for host, port, what in named:
            try:
                infos = await self._lookup(host, port)
            except OSError as exc:
                # As in the compose stack, where executors are on no network of Postgres':
                # a name that does not resolve here is no address a check could reach it by.
                if host not in self._unresolved:
                    self._unresolved.add(host)
                    log.info("a server of Vigil's own does not resolve here; no address of it "
                             "to deny", host=host, error=str(exc))
                continue
            self._add({_own(_ip(str(info[4][0])), port, what) for info in infos}, host)
        self._started = True

    def _add(self, rules: set[Rule], host: str) -> None:
        new = rules - set(self.deny)
        if new:
            self.deny += sorted(new, key=str)
            self._verdicts.clear()
            if self._started:
                log.info("a server of Vigil's own has a new address; denied there too",
                         host=host, denied=sorted(str(rule.target) for rule in new))

    def check(self, ip: str, port: int | None, name: str | None = None) -> None:
        """Raise Denied when `ip` (at `port`, or for ICMP None) is denied; `name` is what
        resolved to it, for the message."""
        # Remembered: checks repeat a few addresses, and judging one costs more than the rest
        # of a TCP check's own work before its connect.
        verdict = self._verdicts.get((ip, port))
        if verdict is MISS:
            verdict = self._judge(_ip(ip), port)
            self._verdicts.put((ip, port), verdict)
        if verdict is not None:
            via = f"{name} resolves to {ip}; " if name and name != ip else ""
            raise Denied(f"denied: {via}{verdict}")

    def _judge(self, ip: IP, port: int | None) -> str | None:
        """Why `ip` at `port` is denied, or None."""
        if any(t.network is not None and ip in t.network and t.port in (None, port)
               for t in self.allow):
            return None
        for rule in self.deny:
            if rule.matches(ip, port):
                where = _where(ip, port)
                return f"{where} {rule.reason}; {ALLOW_HINT}={where}"
        return None

    def check_path(self, path: str) -> None:
        """Raise Denied when the unix socket `path` is denied (compared as real paths, so
        `..` and symbolic links name the same socket)."""
        real = os.path.realpath(path)
        if real in self._allowed_paths:
            return
        for rule in self.deny:
            if rule.target.path == real:
                raise Denied(f"denied: {path} {rule.reason}; {ALLOW_HINT}=unix:{real}")

    async def resolve(self, resolver: Resolver, host: str, port: int | None,
                      within_s: float | None = None) -> tuple[list[Address], bool]:
        """The addresses of `host`, every one of them checked (a name with one denied address
        is denied: a rebinding answer mixes both), and whether this call waited for a lookup;
        raises ResolveError (ResolveTimeout past `within_s`: Resolver.resolve) or Denied."""
        addresses, looked_up = await resolver.resolve(host, port or 0, within_s)
        for _, ip in addresses:
            self.check(ip, port, host)
        return addresses, looked_up


def _address(host: str) -> IP | None:
    """`host` as an address, or None for a name."""
    try:
        return _ip(host)
    except ValueError:
        return None


def _own(ip: IP, port: int, what: str) -> Rule:
    this_host = _reaches_this_host(ip)
    return Rule(Target(ipaddress.ip_network(ip), port), f"is {what}", this_host=this_host)


async def connect(addresses: Sequence[Address], port: int,
                  attempt: Callable[[int, str], Awaitable[T]]) -> T:
    """`attempt(family, ip)` on each checked address in turn (getaddrinfo's order), until one
    connects; ConnectError saying why each failed otherwise."""
    failures = []
    for family, ip in addresses:
        try:
            return await attempt(family, ip)
        except OSError as exc:
            failures.append(f"{ip} port {port}: {os_reason(exc)}")
    raise ConnectError("; ".join(failures) or "no address to connect to")


class GuardedLoop:
    """The running loop, for a client library that connects through the loop it is handed
    (asyncpg) and would resolve names itself: its TCP connects go to addresses the guard
    checked, its unix socket connects to allowed paths only; the library still uses the name
    for TLS (SNI and the certificate check), since it passes it to start_tls itself."""

    def __init__(self, guard: Guard, resolver: Resolver) -> None:
        self._loop = asyncio.get_running_loop()
        self._guard = guard
        self._resolver = resolver

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_connection(self, factory: Callable[[], asyncio.BaseProtocol], host: str,
                                port: int, **kwargs: Any) -> Any:
        addresses, _ = await self._guard.resolve(self._resolver, host, port)
        if kwargs.get("ssl"):  # TLS from the first byte: the certificate is the name's
            kwargs.setdefault("server_hostname", host)
        return await connect(addresses, port, lambda family, ip: self._loop.create_connection(
            factory, ip, port, family=family, **kwargs))

    async def create_unix_connection(self, factory: Callable[[], asyncio.BaseProtocol],
                                     path: str, **kwargs: Any) -> Any:
        self._guard.check_path(path)
        return await self._loop.create_unix_connection(factory, path, **kwargs)
