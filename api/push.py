"""The push endpoint: `GET|POST /api/v1/push/{token}` records a heartbeat for a push monitor.

No bearer token: the push token in the path is the credential (an unguessable value the store
makes per push monitor), so a cron line can call it with a bare `curl`. Optional fields, from
the query string or the body (JSON object, form, or text/plain as the message; the body wins):
`status` = up | down (default up) and `message` (or `msg`), cut to MESSAGE_MAX characters
and kept for a `down` only. The heartbeat's time is Redis's (engine.heartbeats.Recorder),
never this host's clock.

Answers: 200 {"ok": true, "monitor_id": ...}; 404 {"error": "not found"} for any token that
is not a push monitor's, the same body whatever the reason; 422 naming the field for a bad
status; 413 for a body over BODY_MAX; 429 with Retry-After past PUSH_BURST heartbeats at once
for one token (PUSH_PER_S a second after that: a job pinging every second stays well under),
or for an address that sent too many unknown tokens (api.auth: each one is a failed
authentication); 503 when Redis or Postgres cannot be reached, so a client retries.
executors.kinds.push judges the heartbeats at each check.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
import orjson
import structlog
from aiohttp import web
from redis.exceptions import RedisError

from api.auth import failed, throttle, too_many
from api.errors import invalid, json_error, json_response
from api.limits import Buckets
from api.state import PG, REDIS, SHARDS
from engine import store
from engine.cache import BoundedCache
from engine.heartbeats import MESSAGE_MAX, HeartbeatStatus, Recorder

# A token is remembered (found or not) this long: a deleted monitor's token stops working
# within CACHE_S, and a job pinging every second costs one query per CACHE_S, not per ping.
CACHE_S = 30.0
CACHE_MAX = 10_000
BODY_MAX = 16 * 1024
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{16,128}")
FIELDS = ("status", "message", "msg")
PUSH_BURST = 10
PUSH_PER_S = 1.0
log = structlog.get_logger(component="push")


def _too_large(size: int) -> web.HTTPException:
    return json_error(partial(web.HTTPRequestEntityTooLarge, max_size=BODY_MAX, actual_size=size),
                      f"body over {BODY_MAX} bytes")


async def _body_fields(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > BODY_MAX:
        raise _too_large(request.content_length)
    raw = b""
    while len(raw) <= BODY_MAX:  # read() returns what is buffered: loop to the cap or the end
        chunk = await request.content.read(BODY_MAX + 1 - len(raw))
        if not chunk:
            break
        raw += chunk
    if len(raw) > BODY_MAX:
        raise _too_large(len(raw))
    if not raw.strip():
        return {}
    ctype = request.content_type
    if ctype == "application/json":
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise json_error(web.HTTPBadRequest, "body: not JSON") from None
        if not isinstance(data, dict):
            raise json_error(web.HTTPBadRequest, "body: expected a JSON object")
        return {k: v for k, v in data.items() if k in FIELDS}
    if ctype == "application/x-www-form-urlencoded":
        pairs = parse_qsl(raw.decode(errors="replace"), keep_blank_values=True)
        return {k: v for k, v in pairs if k in FIELDS}
    if ctype.startswith("text/"):
        return {"message": raw.decode(errors="replace")}
    return {}


async def _heartbeat(request: web.Request) -> tuple[HeartbeatStatus, str | None]:
    """The heartbeat's status and message; its time is Redis's, taken when it is recorded."""
    fields: dict[str, Any] = {k: v for k, v in request.query.items() if k in FIELDS}
    if request.method == "POST" and request.body_exists:
        fields.update(await _body_fields(request))
    status = fields.get("status", "up")
    if not isinstance(status, str) or status.strip().lower() not in ("up", "down"):
        raise invalid("heartbeat", "status", f"expected up or down, got {str(status)[:40]!r}")
    message = fields.get("message", fields.get("msg"))
    if message is not None and not isinstance(message, str):
        raise invalid("heartbeat", "message", "expected a string")
    return ("down" if status.strip().lower() == "down" else "up",
            message[:MESSAGE_MAX] if message else None)


@contextlib.contextmanager
def _reachable() -> Iterator[None]:
    """503 when Redis or Postgres cannot be reached, so the client retries."""
    try:
        yield
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, RedisError) as exc:
        log.warning("push not recorded", error=repr(exc))
        raise json_error(web.HTTPServiceUnavailable, "not recorded, try again") from None


class PushEndpoint:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        # Push token -> monitor id (None: no such push monitor).
        self.tokens: BoundedCache[str, str | None] = BoundedCache(CACHE_MAX, CACHE_S)
        # Per push monitor's token: only tokens found get a bucket.
        self.limits = Buckets(PUSH_BURST, PUSH_PER_S, CACHE_MAX)
        self.heartbeats = Recorder(app[REDIS], app[SHARDS])

    async def handle(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        # Validate the input first: a bad field is the caller's mistake whatever the token.
        status, message = await _heartbeat(request)
        throttle(request)
        monitor_id = None
        with _reachable():
            if TOKEN_SHAPE.fullmatch(token):
                monitor_id = await self.tokens.get_or_load(
                    token, lambda: store.push_monitor(self.app[PG], token))
        if monitor_id is None:
            failed(request, "unknown push token")
            raise json_error(web.HTTPNotFound, "not found")
        if wait := self.limits.take(token):
            raise too_many(wait, "too many heartbeats for this monitor; retry later")
        with _reachable():
            await self.heartbeats.record(monitor_id, status, message)
        return json_response({"ok": True, "monitor_id": monitor_id})


def add_push_routes(app: web.Application) -> None:
    endpoint = PushEndpoint(app)
    app.router.add_get("/api/v1/push/{token}", endpoint.handle)
    app.router.add_post("/api/v1/push/{token}", endpoint.handle)
