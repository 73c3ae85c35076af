"""The maintenance windows API: create, list, read, replace, delete (engine.maintenance).

Reading needs a token with scope `read`, every change `write`, as for monitors. A validation
error is a 422 with one entry per field: `{"error": "invalid maintenance window", "errors":
[{"field": "timezone", "message": ...}]}`. Each window comes back as stored plus when it
runs: `active_until` (now inside it) and `next`, its next stretches as ISO 8601 times in the
window's own zone, so what a window does on a daylight-saving day can be read before it comes.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from aiohttp import web
from pydantic import ValidationError

from api.auth import requires
from api.errors import invalid, json_error, json_object, json_response, unprocessable
from api.state import PG
from engine import maintenance_store
from engine.maintenance import Window, errors

BASE = "/api/v1/maintenance"
SHOWN_NEXT = 3


def _validate(data: dict[str, Any]) -> Window:
    try:
        return Window.model_validate(data)
    except ValidationError as exc:
        raise unprocessable("maintenance window", errors(exc)) from None


def _local(ms: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, zone).isoformat()


def shown(row: asyncpg.Record, now_ms: int) -> dict[str, Any]:
    """A stored window as the API and `vigil maintenance show` give it; one that no longer
    validates (written under other rules; the scheduler skips it) with its problems."""
    try:
        window = maintenance_store.window_of(row)
    except ValidationError as exc:
        return {**maintenance_store.described(row), "active_until": None, "next": [],
                "invalid": [{"field": f, "message": m} for f, m in errors(exc)]}
    zone = ZoneInfo(window.timezone or "UTC")
    until = window.active(now_ms)
    return {**maintenance_store.described(row),
            "active_until": None if until is None else _local(until, zone),
            "next": [{"start": _local(s, zone), "end": _local(e, zone)}
                     for s, e in window.upcoming(now_ms, SHOWN_NEXT)]}


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _existing(request: web.Request) -> asyncpg.Record:
    row = await maintenance_store.get(request.app[PG], request.match_info["window_id"])
    if row is None:
        raise json_error(web.HTTPNotFound,
                         f"no maintenance window {request.match_info['window_id']!r}")
    return row


async def _saved(request: web.Request, window: Window) -> dict[str, Any]:
    row = await maintenance_store.get(request.app[PG], window.id)
    assert row is not None
    return shown(row, _now_ms())


@requires("write")
async def create(request: web.Request) -> web.Response:
    window = _validate(await json_object(request, "a maintenance window"))
    if not await maintenance_store.create(request.app[PG], window, "api"):
        raise json_error(web.HTTPConflict,
                         f"maintenance window {window.id!r} exists; PUT it to replace it")
    return json_response(await _saved(request, window), status=201)


@requires("read")
async def list_windows(request: web.Request) -> web.Response:
    """Every window; `?monitor=ID` only those that cover that monitor."""
    pool = request.app[PG]
    monitor_id = request.query.get("monitor")
    found = await maintenance_store.list_all(pool)
    if monitor_id is not None:
        ids = {w.id for w in await maintenance_store.covering(pool, monitor_id)}
        found = [r for r in found if r["id"] in ids]
    now = _now_ms()
    return json_response({"windows": [shown(r, now) for r in found]})


@requires("read")
async def show(request: web.Request) -> web.Response:
    return json_response(shown(await _existing(request), _now_ms()))


@requires("write")
async def replace(request: web.Request) -> web.Response:
    data = await json_object(request, "a maintenance window")
    window_id = request.match_info["window_id"]
    if data.setdefault("id", window_id) != window_id:
        raise invalid("maintenance window", "id",
                      f"the body's id differs from the path's {window_id!r}")
    window = _validate(data)
    created = await maintenance_store.upsert(request.app[PG], window, "api")
    return json_response(await _saved(request, window), status=201 if created else 200)


@requires("write")
async def remove(request: web.Request) -> web.Response:
    if not await maintenance_store.delete(request.app[PG], request.match_info["window_id"]):
        raise json_error(web.HTTPNotFound,
                         f"no maintenance window {request.match_info['window_id']!r}")
    return web.Response(status=204)


def add_maintenance_routes(app: web.Application) -> None:
    app.router.add_post(BASE, create)
    app.router.add_get(BASE, list_windows)
    app.router.add_get(f"{BASE}/{{window_id}}", show)
    app.router.add_put(f"{BASE}/{{window_id}}", replace)
    app.router.add_delete(f"{BASE}/{{window_id}}", remove)
