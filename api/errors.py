"""JSON bodies for every answer of the API, errors included: built by orjson, never by
f-strings around user input, so a path or a query value with a quote still gives valid JSON.
An unexpected exception is a JSON 500 that says nothing of it; the traceback goes to the log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

from engine.queue import page_size

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = structlog.get_logger(component="api")


def route_of(request: web.Request) -> str:
    """The route's pattern (`/api/v1/push/{token}`), for logs: a path may hold a secret."""
    resource = request.match_info.route.resource
    return resource.canonical if resource else "-"


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def json_error(status: Callable[..., web.HTTPException], message: str,
               **extra: Any) -> web.HTTPException:
    """An HTTP error to raise, with the body `{"error": message, ...extra}`; `status` is an
    aiohttp HTTPException class (or a partial of one that needs more arguments)."""
    return status(text=orjson.dumps({"error": message, **extra}).decode(),
                  content_type="application/json")


def unprocessable(what: str, problems: list[tuple[str, str]]) -> web.HTTPException:
    """A 422 naming each field: `{"error": "invalid monitor", "errors": [{"field",
    "message"}, ...]}`."""
    return json_error(web.HTTPUnprocessableEntity, f"invalid {what}",
                      errors=[{"field": f, "message": m} for f, m in problems])


def invalid(what: str, field: str, message: str) -> web.HTTPException:
    """A 422 naming one field."""
    return unprocessable(what, [(field, message)])


def page_limit(request: web.Request, default: int) -> int:
    """A listing's `?limit=` (engine.queue.page_size), or a 422 naming `limit`."""
    try:
        return page_size(request.query.get("limit", str(default)))
    except ValueError as exc:
        raise invalid("query", "limit", str(exc)) from None


async def json_object(request: web.Request, what: str) -> dict[str, Any]:
    """The request's body as a JSON object, or a 400 that says what it should be (`what`:
    "a monitor definition", ...). Bounded by the app's client_max_size."""
    raw = await request.read()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise json_error(web.HTTPBadRequest, f"body: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise json_error(web.HTTPBadRequest, f"body: expected a JSON object ({what})")
    return data


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own errors (no such route, method not allowed, body too large) as JSON too,
    and a bug as a JSON 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        # Kept: what the error says beyond its body (Allow on a 405, for one).
        headers = {k: v for k, v in exc.headers.items()
                   if k.lower() not in ("content-type", "content-length")}
        return web.Response(status=exc.status, headers=headers, content_type="application/json",
                            body=orjson.dumps({"error": exc.reason}))
    except Exception:
        log.exception("request failed", method=request.method, route=route_of(request))
        return json_response({"error": "internal error"}, status=500)
