"""What notifications reach in tests: a webhook receiver that verifies Standard Webhooks
signatures, dedupes on webhook-id and can fail or hold the first requests of each message;
and an SMTP server (aiosmtpd) for apprise's mailto://."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

import orjson
from aiohttp import web
from aiosmtpd.controller import Controller

from tests.support.helpers import free_port
from tests.support.servers import serve_app

SECRET = "whsec_" + base64.b64encode(b"vigil-test-secret-0123456789ab").decode()
# Standard Webhooks' replay window.
TOLERANCE_S = 300


@dataclass
class WebhookReceiver:
    """The first `hold_first` requests of all are held open until `release` is set (a
    receiver that hangs while the sender is killed); per message (webhook-id), the first
    `fail_first` requests answer `fail_status`; then 200. Every request with a valid
    signature is in `requests`; `delivered` has each message once, as a deduping receiver
    keeps it."""

    secret: str = SECRET
    fail_first: int = 0
    fail_status: int = 500
    hold_first: int = 0
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    delivered: dict[str, dict[str, Any]] = field(default_factory=dict)
    bad_signatures: int = 0
    held: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def verified(self, request: web.Request, body: bytes) -> str | None:
        msg_id = request.headers.get("webhook-id", "")
        stamp = request.headers.get("webhook-timestamp", "")
        if not msg_id or not stamp.isdigit() or abs(time.time() - int(stamp)) > TOLERANCE_S:
            return None
        key = base64.b64decode(self.secret.removeprefix("whsec_"))
        mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
        expected = "v1," + base64.b64encode(mac).decode()
        # The header may list several signatures (key rotation), space-separated.
        given = request.headers.get("webhook-signature", "").split()
        return msg_id if any(hmac.compare_digest(expected, g) for g in given) else None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        msg_id = self.verified(request, body)
        if msg_id is None:
            self.bad_signatures += 1
            return web.Response(status=401, text="bad signature")
        data = orjson.loads(body)
        self.requests.append((msg_id, data))
        seen = sum(1 for m, _ in self.requests if m == msg_id)
        if len(self.requests) <= self.hold_first:
            self.held.set()
            await self.release.wait()
        if seen <= self.fail_first:
            return web.Response(status=self.fail_status, text="not now")
        self.delivered.setdefault(msg_id, data)
        return web.Response(text="ok")

    def attempts(self, msg_id: str) -> int:
        return sum(1 for m, _ in self.requests if m == msg_id)

    def messages(self) -> Counter[str]:
        """How many distinct messages of each kind were delivered."""
        return Counter(d["message"] for d in self.delivered.values())


@contextlib.asynccontextmanager
async def webhook_receiver(receiver: WebhookReceiver) -> AsyncIterator[str]:
    """The receiver on a free 127.0.0.1 port; yields its URL."""
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    async with serve_app(app) as url:
        try:
            yield f"{url}/hook"
        finally:
            receiver.release.set()  # nothing left hanging for the runner's cleanup


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.original_content or envelope.content))
        return "250 OK"


@contextlib.contextmanager
def smtp_server() -> Iterator[tuple[int, list[Message]]]:
    """An SMTP server on a free 127.0.0.1 port (no TLS, no auth); yields the port and the
    list the messages it receives land in."""
    mailbox = _Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port, mailbox.messages
    finally:
        controller.stop()
