"""The monitors API: create, read, replace, patch, delete, pause and resume.

Every route here needs `Authorization: Bearer <token>` (`vigil tokens create`): reading
definitions needs scope `read`, every change `write`. Validation errors are 422 with one
entry per field: `{"error": "invalid monitor", "errors": [{"field": "http.url", ...}]}`.
The listing pages by id (`?limit=`, `?after=`, `next`), so a million monitors never make one
answer.

Secrets are write-only (engine.secrets): a definition comes back with them REDACTED, and a PUT
or PATCH that sends REDACTED keeps the stored one. A secret this server cannot seal (no
VIGIL_SECRET_KEY) is a 422 naming the field and the variable, not a 500: nothing failed, the
server refuses to store a secret in the clear, and definitions without one are still accepted.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import ValidationError

from api.auth import requires
from api.errors import (
    Handler,
    invalid,
    json_error,
    json_object,
    json_response,
    page_limit,
    unprocessable,
)
from api.state import PG, SCHEMA
from engine import store
from engine.monitors import ID_PATTERN, MonitorBase, field_errors
from engine.secrets import Keyring, SecretError

# Read once from the environment when the routes are added, as every setting is at start-up.
KEYRING = web.AppKey("keyring", Keyring)
# Monitors a page lists unless `?limit=` says otherwise (at most engine.queue.PAGE_MAX).
PAGE_DEFAULT = 500


def _validate(request: web.Request, data: dict[str, Any]) -> MonitorBase:
    try:
        monitor = request.app[SCHEMA].validate(data)
    except ValidationError as exc:
        raise unprocessable("monitor", field_errors(exc)) from None
    return monitor


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


async def _save(request: web.Request, monitor: MonitorBase) -> tuple[bool | None, dict[str, Any]]:
    pool = request.app[PG]
    async with pool.acquire() as conn:
        try:
            created = await store.upsert(conn, monitor, "api", request.app[KEYRING])
        except SecretError as exc:
            raise invalid("monitor", f"{monitor.kind}.{exc.field}", exc.reason) from None
    row = await store.get(pool, monitor.id)
    assert row is not None
    return created, store.described(row)


async def _existing(request: web.Request) -> asyncpg.Record:
    row = await store.get(request.app[PG], request.match_info["monitor_id"])
    if row is None:
        raise json_error(web.HTTPNotFound, f"no monitor {request.match_info['monitor_id']!r}")
    return row


@requires("write")
async def create(request: web.Request) -> web.Response:
    monitor = _validate(request, await json_object(request, "a monitor definition"))
    if await store.get(request.app[PG], monitor.id) is not None:
        raise json_error(web.HTTPConflict, f"monitor {monitor.id!r} exists; PUT or PATCH it")
    _, body = await _save(request, monitor)
    return json_response(body, status=201)


def _page_query(request: web.Request) -> tuple[int, str]:
    """`?limit=` and `?after=` of a listing, or a 422 naming the one that is wrong."""
    limit = page_limit(request, PAGE_DEFAULT)
    after = request.query.get("after", "")
    if after and not re.fullmatch(ID_PATTERN, after):
        raise invalid("query", "after", f"{after!r} is not a monitor id (the `next` of a page "
                      "ends with one)")
    return limit, after


@requires("read")
async def list_monitors(request: web.Request) -> web.Response:
    """A page of monitors in id order; `next` is the URL of the one after it (the same query
    with `after` its last id), null on the last page. One row more than the page is read to
    tell, so a listing whose count is a multiple of `limit` ends without an empty page."""
    limit, after = _page_query(request)
    rows = await store.page(request.app[PG], limit + 1, after, request.query.get("tag"))
    more = len(rows) > limit
    rows = rows[:limit]
    following = request.rel_url.update_query(after=rows[-1]["id"]) if more else None
    return json_response({"monitors": [store.described(r) for r in rows],
                          "next": None if following is None else str(following)})


@requires("read")
async def show(request: web.Request) -> web.Response:
    return json_response(store.described(await _existing(request)))


@requires("write")
async def replace(request: web.Request) -> web.Response:
    data = await json_object(request, "a monitor definition")
    monitor_id = request.match_info["monitor_id"]
    if data.setdefault("id", monitor_id) != monitor_id:
        raise invalid("monitor", "id", f"the body's id differs from the path's {monitor_id!r}")
    created, body = await _save(request, _validate(request, data))
    return json_response(body, status=201 if created else 200)


@requires("write")
async def patch(request: web.Request) -> web.Response:
    current = store.definition(await _existing(request))
    changes = await json_object(request, "a monitor definition")
    if changes.get("id", current["id"]) != current["id"]:
        raise invalid("monitor", "id", "a monitor's id cannot change")
    if changes.get("kind", current["kind"]) != current["kind"]:
        current.pop(current["kind"])  # a new kind brings its own settings
    _, body = await _save(request, _validate(request, merge_patch(current, changes)))
    return json_response(body)


@requires("write")
async def remove(request: web.Request) -> web.Response:
    if not await store.delete(request.app[PG], request.match_info["monitor_id"]):
        raise json_error(web.HTTPNotFound, f"no monitor {request.match_info['monitor_id']!r}")
    return web.Response(status=204)


def _toggle(enabled: bool) -> Handler:
    @requires("write")
    async def toggle(request: web.Request) -> web.Response:
        if not await store.set_enabled(request.app[PG], request.match_info["monitor_id"],
                                       enabled):
            raise json_error(web.HTTPNotFound, f"no monitor {request.match_info['monitor_id']!r}")
        return json_response(store.described(await _existing(request)))

    return toggle


def add_monitor_routes(app: web.Application) -> None:
    app[KEYRING] = Keyring.from_env()
    base = "/api/v1/monitors"
    app.router.add_post(base, create)
    app.router.add_get(base, list_monitors)
    app.router.add_get(f"{base}/{{monitor_id}}", show)
    app.router.add_put(f"{base}/{{monitor_id}}", replace)
    app.router.add_patch(f"{base}/{{monitor_id}}", patch)
    app.router.add_delete(f"{base}/{{monitor_id}}", remove)
    app.router.add_post(f"{base}/{{monitor_id}}/pause", _toggle(False))
    app.router.add_post(f"{base}/{{monitor_id}}/resume", _toggle(True))
