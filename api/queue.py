"""The operations API (engine.queue): the streams and groups, the executors by region,
whether each role keeps up, the dead letters (list, retry, purge), and pausing dispatch.

Every route needs a token with scope `admin`. Stats name Vigil's own consumers and hosts; a
dead letter holds the entry's event as it was: a check's whole spec (its URL, headers and
body; secrets stay sealed), a result's probe output (error text, status code), an evaluation
event. None of it is for a public page or a `read` token.
"""

from __future__ import annotations

import functools

import structlog
from aiohttp import web

from api.auth import requires, token_name
from api.errors import Handler, invalid, json_error, json_response, page_limit
from api.state import REDIS, SHARDS
from engine import queue
from engine.service import OUTAGES, Outage
from engine.streams import DeadLetters

BASE = "/api/v1/queue"
PAGE_DEFAULT = 100
UNREACHABLE = "Redis cannot be reached; retry"
log = structlog.get_logger(component="api.queue")
_redis_outage = Outage("the operations API reaching Redis")


def _reaching_redis(handler: Handler) -> Handler:
    """503 while Redis is away, so a client retries, with one warning for the whole outage
    rather than a traceback per request."""

    @functools.wraps(handler)
    async def reached(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except OUTAGES as exc:
            _redis_outage.failed(exc)
            raise json_error(web.HTTPServiceUnavailable, UNREACHABLE) from None
        _redis_outage.ok()
        return response

    return reached


async def _done(request: web.Request, what: str, **fields: object) -> None:
    """A line for each change an operator makes, with the token's name: who paused dispatch
    or dropped dead letters is a question asked afterwards."""
    log.info(what, token=await token_name(request), **fields)


def _dead_letters(request: web.Request) -> DeadLetters:
    """The dead letters of the shard `?shard=` names (each shard keeps its own), the first
    shard's by default."""
    shards = request.app[SHARDS].all
    text = request.query.get("shard", shards[0].shard)
    for keys in shards:
        if keys.shard == text:
            return DeadLetters(request.app[REDIS], keys.deadletter)
    raise invalid("query", "shard", f"no shard {text!r}: the shards are "
                  + ", ".join(k.shard for k in shards))


def _region(request: web.Request) -> str | None:
    text = request.query.get("region")
    try:
        return None if text is None else queue.region_of(text)
    except ValueError as exc:
        raise invalid("query", "region", str(exc)) from None


def _dead_letter_id(text: str, field: str) -> str:
    try:
        return queue.dead_letter_id(text)
    except ValueError as exc:
        raise invalid("request", field, str(exc)) from None


@requires("admin")
@_reaching_redis
async def stats(request: web.Request) -> web.Response:
    return json_response(await queue.stats(request.app[REDIS], request.app[SHARDS].all))


@requires("admin")
@_reaching_redis
async def health(request: web.Request) -> web.Response:
    """200 while every role keeps up and every region with checks waiting has an executor
    alive; 503 with the reasons otherwise."""
    report = queue.health_of(await queue.stats(request.app[REDIS], request.app[SHARDS].all))
    return json_response(report, status=200 if report.healthy else 503)


@requires("admin")
@_reaching_redis
async def list_dead_letters(request: web.Request) -> web.Response:
    limit = page_limit(request, PAGE_DEFAULT)
    after = request.query.get("after")
    dead = _dead_letters(request)
    page = await dead.page(limit, None if after is None else _dead_letter_id(after, "after"))
    return json_response({"dead_letters": page, "count": await dead.count(),
                          "next": page[-1].id if len(page) == limit else None})


@requires("admin")
@_reaching_redis
async def retry_one(request: web.Request) -> web.Response:
    dead_id = _dead_letter_id(request.match_info["entry_id"], "entry_id")
    if not await _dead_letters(request).retry(dead_id):
        raise json_error(web.HTTPNotFound, f"no dead letter {dead_id}")
    await _done(request, "dead letter retried", id=dead_id)
    return json_response({"retried": 1})


@requires("admin")
@_reaching_redis
async def retry_all(request: web.Request) -> web.Response:
    retried = await _dead_letters(request).retry_all()
    await _done(request, "dead letters retried", retried=retried)
    return json_response({"retried": retried})


@requires("admin")
@_reaching_redis
async def purge(request: web.Request) -> web.Response:
    """Every dead letter, or the one `?id=` names."""
    dead = _dead_letters(request)
    text = request.query.get("id")
    if text is None:
        purged = await dead.purge_all()
        await _done(request, "dead letters purged", purged=purged)
        return json_response({"purged": purged})
    dead_id = _dead_letter_id(text, "id")
    if not await dead.purge(dead_id):
        raise json_error(web.HTTPNotFound, f"no dead letter {dead_id}")
    await _done(request, "dead letter purged", id=dead_id)
    return json_response({"purged": 1})


@requires("admin")
@_reaching_redis
async def pause(request: web.Request) -> web.Response:
    region = _region(request)
    paused = await queue.pause(request.app[REDIS], request.app[SHARDS].all, region)
    await _done(request, "dispatch paused", region=region or queue.ALL_REGIONS)
    return json_response({"paused": paused})


@requires("admin")
@_reaching_redis
async def resume(request: web.Request) -> web.Response:
    region = _region(request)
    paused = await queue.resume(request.app[REDIS], request.app[SHARDS].all, region)
    await _done(request, "dispatch resumed", region=region or queue.ALL_REGIONS,
                still_paused=sorted(paused))
    return json_response({"paused": paused})


def add_queue_routes(app: web.Application) -> None:
    app.router.add_get(f"{BASE}/stats", stats)
    app.router.add_get(f"{BASE}/health", health)
    app.router.add_get(f"{BASE}/dead-letters", list_dead_letters)
    app.router.add_delete(f"{BASE}/dead-letters", purge)
    app.router.add_post(f"{BASE}/dead-letters/retry", retry_all)
    app.router.add_post(f"{BASE}/dead-letters/{{entry_id}}/retry", retry_one)
    app.router.add_post(f"{BASE}/pause", pause)
    app.router.add_post(f"{BASE}/resume", resume)
