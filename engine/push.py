"""The push endpoint: `GET|POST /api/v1/push/{token}` records a heartbeat for a push monitor.

No bearer token: the push token in the path is the credential (an unguessable value the store
makes per push monitor), so a cron line can call it with a bare `curl`. Optional fields, from
the query string or the body (JSON object, form, or text/plain as the message; the body wins):
`status` = up | down (default up) and `message` (or `msg`), cut to MESSAGE_MAX characters.

Answers: 200 {"ok": true, "monitor_id": ...}; 404 {"error": "not found"} for any token that
is not a push monitor's, the same body whatever the reason; 422 naming the field for a bad
status; 413 for a body over BODY_MAX; 503 when Redis or Postgres cannot be reached, so a
client retries. executors.push judges the heartbeats at each check.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
import orjson
import redis.asyncio as aioredis
import structlog
from aiohttp import web
from redis.exceptions import RedisError

from engine.keys import Keys
from executors.push import MESSAGE_MAX, Heartbeat

LOOKUP = "SELECT id FROM monitors WHERE push_token = $1 AND kind = 'push'"
# A token is remembered (found or not) this long: a deleted monitor's token stops working
# within CACHE_S, and a job pinging every second costs one query per CACHE_S, not per ping.
CACHE_S = 30.0
CACHE_MAX = 10_000
BODY_MAX = 16 * 1024
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{16,128}")
FIELDS = ("status", "message", "msg")
log = structlog.get_logger(component="push")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _fail(status: type[web.HTTPException], message: str, **extra: Any) -> web.HTTPException:
    return status(text=orjson.dumps({"error": message, **extra}).decode(),
                  content_type="application/json")


def _invalid(field: str, message: str) -> web.HTTPException:
    return _fail(web.HTTPUnprocessableEntity, "invalid heartbeat",
                 errors=[{"field": field, "message": message}])


class PushTokens:
    """Push token -> monitor id (None: no such push monitor), cached for CACHE_S, at most
    CACHE_MAX tokens; the oldest lookup is dropped first."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._seen: dict[str, tuple[float, str | None]] = {}

    async def monitor_of(self, token: str) -> str | None:
        now = time.monotonic()
        hit = self._seen.pop(token, None)
        if hit is None or now - hit[0] >= CACHE_S:
            hit = (now, await self.pool.fetchval(LOOKUP, token))
        while len(self._seen) >= CACHE_MAX:
            self._seen.pop(next(iter(self._seen)))
        self._seen[token] = hit
        return hit[1]


def _too_large(size: int) -> web.HTTPException:
    return web.HTTPRequestEntityTooLarge(
        max_size=BODY_MAX, actual_size=size, content_type="application/json",
        text=orjson.dumps({"error": f"body over {BODY_MAX} bytes"}).decode())


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
            raise _fail(web.HTTPBadRequest, "body: not JSON") from None
        if not isinstance(data, dict):
            raise _fail(web.HTTPBadRequest, "body: expected a JSON object")
        return {k: v for k, v in data.items() if k in FIELDS}
    if ctype == "application/x-www-form-urlencoded":
        pairs = parse_qsl(raw.decode(errors="replace"), keep_blank_values=True)
        return {k: v for k, v in pairs if k in FIELDS}
    if ctype.startswith("text/"):
        return {"message": raw.decode(errors="replace")}
    return {}


async def _heartbeat(request: web.Request) -> Heartbeat:
    fields: dict[str, Any] = {k: v for k, v in request.query.items() if k in FIELDS}
    if request.method == "POST" and request.body_exists:
        fields.update(await _body_fields(request))
    status = fields.get("status", "up")
    if not isinstance(status, str) or status.strip().lower() not in ("up", "down"):
        raise _invalid("status", f"expected up or down, got {str(status)[:40]!r}")
    message = fields.get("message", fields.get("msg"))
    if message is not None and not isinstance(message, str):
        raise _invalid("message", "expected a string")
    return Heartbeat(at_ms=int(time.time() * 1000),
                     status="down" if status.strip().lower() == "down" else "up",
                     message=message[:MESSAGE_MAX] if message else None)


class PushEndpoint:
    def __init__(self, r: aioredis.Redis, tokens: PushTokens, keys: Keys) -> None:
        self.r = r
        self.tokens = tokens
        self.keys = keys

    async def handle(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        # Validate the input first: a bad field is the caller's mistake whatever the token.
        beat = await _heartbeat(request)
        monitor_id = None
        try:
            if TOKEN_SHAPE.fullmatch(token):
                monitor_id = await self.tokens.monitor_of(token)
            if monitor_id is not None:
                await self.r.hset(self.keys.heartbeats, monitor_id, beat.to_json())
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, RedisError) as exc:
            log.warning("push not recorded", error=repr(exc))
            raise _fail(web.HTTPServiceUnavailable, "not recorded, try again") from None
        if monitor_id is None:
            raise _fail(web.HTTPNotFound, "not found")
        return _json({"ok": True, "monitor_id": monitor_id})


def add_push_routes(app: web.Application, r: aioredis.Redis, pool: asyncpg.Pool,
                    keys: Keys) -> None:
    endpoint = PushEndpoint(r, PushTokens(pool), keys)
    app.router.add_get("/api/v1/push/{token}", endpoint.handle)
    app.router.add_post("/api/v1/push/{token}", endpoint.handle)
