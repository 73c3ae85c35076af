"""Name resolution for checks and webhooks: loop.getaddrinfo, cached per (host, port) for a
short TTL.

One resolver per executor (in `Context`) and per notifier's transports. Thousands of monitors
often share a handful of hosts, so a 10 s cache (aiohttp's default) saves a thread-pool round
trip on almost every check while still following DNS changes quickly. Concurrent lookups of
one name share a single call.
"""

from __future__ import annotations

import asyncio
import socket

from engine.cache import MISS, BoundedCache

TTL_S = 10.0
MAX_ENTRIES = 10_000

Address = tuple[int, str]  # (address family, IP address as text)


class ResolveError(Exception):
    """The name did not resolve; the message says why (NXDOMAIN, no address, ...). `kind` is
    the error kind of a check that fails here."""

    kind = "dns"


class ResolveTimeout(ResolveError):
    """The resolver gave no answer within the time the check had for it."""

    kind = "dns_timeout"


def _literal(host: str) -> list[Address] | None:
    # inet_pton: every check of an IP-literal target passes here, and it costs a tenth of
    # ipaddress's parser. A scoped IPv6 literal (fe80::1%eth0) goes to getaddrinfo instead.
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):  # not this family's literal; ValueError: a NUL in it
            continue
        return [(family, host)]
    return None


class Resolver:
    def __init__(self, ttl_s: float = TTL_S, max_entries: int = MAX_ENTRIES) -> None:
        self._cache: BoundedCache[tuple[str, int], list[Address]] = BoundedCache(max_entries,
                                                                                  ttl_s)
        self._pending: dict[tuple[str, int], asyncio.Task[list[Address]]] = {}

    async def resolve(self, host: str, port: int,
                      within_s: float | None = None) -> tuple[list[Address], bool]:
        """The addresses of `host`, and whether this call waited for a lookup (False when the
        answer came from the cache or `host` is an IP literal: its "dns" phase is 0).
        A lookup waited for longer than `within_s` raises ResolveTimeout: a check whose
        resolver stalls says so and names the name, instead of ending as the executor's bare
        `timeout` as if the target had been silent. Only a lookup is timed: an answer at hand
        costs no timer."""
        literal = _literal(host)
        if literal is not None:
            return literal, False
        key = (host, port)
        hit = self._cache.get(key)
        if hit is not MISS:
            return hit, False
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(self._lookup(host, port))
            self._pending[key] = task
            task.add_done_callback(lambda t: self._forget(key, t))
        # Shielded: a check cancelled by its timeout must not cancel the lookup others await.
        if within_s is None:
            return await asyncio.shield(task), True
        try:
            async with asyncio.timeout(max(within_s, 0.0)):
                return await asyncio.shield(task), True
        except TimeoutError:
            raise ResolveTimeout(f"{host}: the resolver gave no answer within "
                                 f"{max(within_s, 0.0) * 1000:.0f} ms") from None

    async def _lookup(self, host: str, port: int) -> list[Address]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ResolveError(f"{host}: {exc.strerror}") from None
        except (OSError, UnicodeError) as exc:
            raise ResolveError(f"{host}: {exc}") from None
        # getaddrinfo repeats an address once per protocol on some systems; keep the order.
        found = list(dict.fromkeys((int(family), str(addr[0])) for family, _, _, _, addr in infos))
        if not found:
            raise ResolveError(f"{host}: no address")
        self._cache.put((host, port), found)
        return found

    def _forget(self, key: tuple[str, int], task: asyncio.Task[list[Address]]) -> None:
        self._pending.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so a lookup nobody awaits any more logs nothing

    def close(self) -> None:
        for task in self._pending.values():
            task.cancel()
        self._pending.clear()
        self._cache.clear()
