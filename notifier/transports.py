"""How a message reaches a channel: a native webhook signed as Standard Webhooks says, or
apprise for every other service. One error type says whether trying again can help.

The webhook is sent with aiohttp rather than through apprise's json:// because the
idempotency key and the signature are the point of it: apprise can neither sign nor send a
header made per message.

Any holder of a write token sets a channel's URL, so no send may reach what the guard denies
(engine.guard: Vigil's own Redis, Postgres and ClickHouse, cloud metadata, VIGIL_DENY_TARGETS).
A denied send fails its attempt with an error naming the rule, and is retried or dead like any
failed one: the deny list follows Vigil's own servers, an operator may allow the target.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import time
from typing import Any

import aiohttp
import apprise
import orjson
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from engine.channels import Channel, secret_bytes
from engine.guard import Denied, Guard
from engine.resolver import ResolveError, Resolver
from engine.text import clip, redact
from notifier.messages import text


class TransportError(Exception):
    """A send that failed; `permanent` when the same send can never work (a bad URL, a
    receiver that says the request itself is wrong)."""

    def __init__(self, message: str, status: int | None = None, permanent: bool = False) -> None:
        super().__init__(clip(message))
        self.status = status
        self.permanent = permanent


# 4xx answers that say "later", not "never".
RETRIED_4XX = frozenset({408, 409, 425, 429})


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,` + base64 HMAC-SHA256 of `id.timestamp.body` under the secret's bytes."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, msg_id: str, body: bytes) -> dict[str, str]:
    # The timestamp is this attempt's, so a receiver's replay window holds for retries too.
    timestamp = int(time.time())
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(secret, msg_id, timestamp, body),
            "content-type": "application/json"}


class GuardedResolver(AbstractResolver):
    """The webhooks' resolver: the addresses of a name, every one checked by the guard (one
    denied address denies the name). aiohttp connects to the addresses it returns and resolves
    nothing again, so an answer that changes between the check and the connect (DNS
    rebinding) cannot get past it."""

    def __init__(self, guard: Guard, resolver: Resolver) -> None:
        self._guard = guard
        self._resolver = resolver

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_UNSPEC) -> list[ResolveResult]:
        addresses, _ = await self._guard.resolve(self._resolver, host, port)
        flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        return [ResolveResult(hostname=host, host=ip, port=port, family=found, proto=0,
                              flags=flags)
                for found, ip in addresses if family in (socket.AF_UNSPEC, found)]

    async def close(self) -> None:
        """Nothing to release: the resolver is the transports'."""


class Transports:
    """Sends one message to one channel, only where `guard` allows the names `resolver`
    resolves; holds the HTTP session for the webhooks."""

    def __init__(self, timeout_ms: int, guard: Guard, resolver: Resolver | None = None) -> None:
        self.timeout_s = timeout_ms / 1000
        self.guard = guard
        self._resolver = resolver or Resolver()
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        """Close the session; the next webhook opens a new one (a sender that restarts after
        an outage of Postgres keeps its transports)."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._resolver.close()

    async def _checked(self, host: str, port: int) -> None:
        """Raise Denied when an address of `host` is denied at `port`, ResolveError when it
        does not resolve within the send's time."""
        await self.guard.resolve(self._resolver, host, port, self.timeout_s)

    async def send(self, channel: Channel, key: str, body: dict[str, Any]) -> int | None:
        """Send; the HTTP status of a webhook's answer (None for apprise). Raises
        TransportError."""
        if channel.kind == "webhook":
            return await self._webhook(channel, key, body)
        await self._apprise(channel, body)
        return None

    async def _webhook(self, channel: Channel, key: str, body: dict[str, Any]) -> int:
        if self._session is None:
            # No DNS cache of aiohttp's: every connect asks the guarded resolver (the
            # resolver's own cache keeps that cheap) and meets the deny list as it is now.
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self.guard, self._resolver), use_dns_cache=False)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        assert channel.secret is not None
        data = orjson.dumps({"type": f"vigil.{body['message']}", **body})
        try:
            url = URL(channel.url)
            if url.host is not None and url.port is not None:
                # aiohttp asks its resolver about names only, so an IP literal is checked
                # here; a name's answer is then the cached one the resolver checks again.
                await self._checked(url.host, url.port)
            async with self._session.post(url, data=data, allow_redirects=False,
                                          headers=signed_headers(channel.secret, key,
                                                                 data)) as resp:
                await resp.content.read(4096)  # the answer is not ours to keep
                status = resp.status
        except (Denied, ResolveError) as exc:
            raise TransportError(str(exc)) from None
        except TimeoutError:
            raise TransportError(f"no answer within {self.timeout_s:g} s") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from None
        if 200 <= status < 300:
            return status
        raise TransportError(f"the receiver answered HTTP {status}", status,
                             permanent=400 <= status < 500 and status not in RETRIED_4XX)

    async def _apprise(self, channel: Channel, body: dict[str, Any]) -> None:
        plugin = apprise.Apprise.instantiate(channel.url)
        if plugin is None:
            raise TransportError("not an apprise URL this notifier supports", permanent=True)
        try:
            await self._apprise_target(plugin)
        except Denied as exc:
            raise TransportError(str(exc)) from None
        service = apprise.Apprise()
        service.add(plugin)
        title, message, kind = text(body)
        result = await service.async_notify(body=message, title=title, notify_type=kind,
                                            timeout=self.timeout_s)
        if not result:
            logs = [e.message for r in result for e in r.logs()
                    if e.level in ("WARNING", "ERROR", "CRITICAL")]
            # Recorded and shown by the API: the URL's credentials must not ride along.
            raise TransportError(redact(logs[-1], channel.url).replace(channel.url, "***")
                                 if logs else f"apprise: {result.status.name}")

    async def _apprise_target(self, plugin: apprise.NotifyBase) -> None:
        """Raise Denied when the server apprise will connect to is denied. That is the URL's
        host for a plugin whose URL names one (json://, form://, gotify://, mailto://'s SMTP
        server...), at its port or HTTP's default (apprise's own); a service at a fixed
        public endpoint (discord://, slack://, tgram://...) has none to check.

        Apprise resolves the name again itself when it connects: an answer that changes
        between this check and that connect (DNS rebinding) gets past it, a window the
        webhooks, which connect to the checked addresses, do not have. A name that does not
        resolve here is not denied: there is no address to check, and apprise fails to reach
        it on its own."""
        if "host" not in plugin.template_tokens or not plugin.host:
            return
        host = (getattr(plugin, "smtp_host", None) or plugin.host).strip("[]")
        port = plugin.port or (443 if plugin.secure else 80)
        try:
            await self._checked(host, port)
        except ResolveError:
            return
