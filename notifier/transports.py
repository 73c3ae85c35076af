"""How a message reaches a channel: a native webhook signed as Standard Webhooks says, or
apprise for every other service. One error type says whether trying again can help.

The webhook is sent with aiohttp rather than through apprise's json:// because the
idempotency key and the signature are the point of it: apprise can neither sign nor send a
header made per message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import aiohttp
import apprise
import orjson

from engine.channels import Channel, secret_bytes
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


class Transports:
    """Sends one message to one channel; holds the HTTP session for the webhooks."""

    def __init__(self, timeout_ms: int) -> None:
        self.timeout_s = timeout_ms / 1000
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        """Close the session; the next webhook opens a new one (a sender that restarts after
        an outage of Postgres keeps its transports)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, channel: Channel, key: str, body: dict[str, Any]) -> int | None:
        """Send; the HTTP status of a webhook's answer (None for apprise). Raises
        TransportError."""
        if channel.kind == "webhook":
            return await self._webhook(channel, key, body)
        await self._apprise(channel, body)
        return None

    async def _webhook(self, channel: Channel, key: str, body: dict[str, Any]) -> int:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        assert channel.secret is not None
        data = orjson.dumps({"type": f"vigil.{body['message']}", **body})
        try:
            async with self._session.post(channel.url, data=data, allow_redirects=False,
                                          headers=signed_headers(channel.secret, key,
                                                                 data)) as resp:
                await resp.content.read(4096)  # the answer is not ours to keep
                status = resp.status
        except TimeoutError:
            raise TransportError(f"no answer within {self.timeout_s:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from None
        if 200 <= status < 300:
            return status
        raise TransportError(f"the receiver answered HTTP {status}", status,
                             permanent=400 <= status < 500 and status not in RETRIED_4XX)

    async def _apprise(self, channel: Channel, body: dict[str, Any]) -> None:
        service = apprise.Apprise()
        if not service.add(channel.url):
            raise TransportError("not an apprise URL this notifier supports", permanent=True)
        title, message, kind = text(body)
        result = await service.async_notify(body=message, title=title, notify_type=kind,
                                            timeout=self.timeout_s)
        if not result:
            logs = [e.message for r in result for e in r.logs()
                    if e.level in ("WARNING", "ERROR", "CRITICAL")]
            # Recorded and shown by the API: the URL's credentials must not ride along.
            raise TransportError(redact(logs[-1], channel.url).replace(channel.url, "***")
                                 if logs else f"apprise: {result.status.name}")
