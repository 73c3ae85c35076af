"""The status pages API: create, list, read, replace, delete (engine.status_pages).

Reading needs a token with scope `read`, every change `write`, as for monitors. A validation
error is a 422 with one entry per field: `{"error": "invalid status page", "errors":
[{"field": "groups.0.monitors.2.id", "message": "no monitor 'ghost'"}]}`, nothing written.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web
from pydantic import ValidationError

from api.auth import requires
from api.errors import invalid, json_error, json_object, json_response, unprocessable
from api.page import RENDERS
from api.state import PG
from engine import status_pages
from engine.maintenance import errors
from engine.status_pages import Page, PageError

BASE = "/api/v1/status-pages"
WHAT = "status page"


def _validate(data: dict[str, Any]) -> Page:
    try:
        return Page.model_validate(data)
    except ValidationError as exc:
        raise unprocessable(WHAT, errors(exc, "page")) from None


def _refused(exc: PageError) -> web.HTTPException:
    return unprocessable(WHAT, exc.problems)


async def _existing(request: web.Request) -> asyncpg.Record:
    row = await status_pages.get(request.app[PG], request.match_info["page_id"])
    if row is None:
        raise json_error(web.HTTPNotFound, f"no status page {request.match_info['page_id']!r}")
    return row


async def _saved(request: web.Request, page: Page) -> dict[str, Any]:
    # The page's next view shows the change at once, not after the render cache's expiry.
    request.app[RENDERS].clear()
    row = await status_pages.get(request.app[PG], page.id)
    assert row is not None
    return status_pages.described(row)


@requires("write")
async def create(request: web.Request) -> web.Response:
    page = _validate(await json_object(request, "a status page"))
    try:
        made = await status_pages.create(request.app[PG], page, "api")
    except PageError as exc:
        raise _refused(exc) from None
    if not made:
        raise json_error(web.HTTPConflict, f"status page {page.id!r} exists; PUT it to replace it")
    return json_response(await _saved(request, page), status=201)


@requires("read")
async def list_pages(request: web.Request) -> web.Response:
    rows = await status_pages.list_all(request.app[PG])
    return json_response({"status_pages": [status_pages.described(r) for r in rows]})


@requires("read")
async def show(request: web.Request) -> web.Response:
    return json_response(status_pages.described(await _existing(request)))


@requires("write")
async def replace(request: web.Request) -> web.Response:
    data = await json_object(request, "a status page")
    page_id = request.match_info["page_id"]
    if data.setdefault("id", page_id) != page_id:
        raise invalid(WHAT, "id", f"the body's id differs from the path's {page_id!r}")
    page = _validate(data)
    try:
        created = await status_pages.upsert(request.app[PG], page, "api")
    except PageError as exc:
        raise _refused(exc) from None
    return json_response(await _saved(request, page), status=201 if created else 200)


@requires("write")
async def remove(request: web.Request) -> web.Response:
    if not await status_pages.delete(request.app[PG], request.match_info["page_id"]):
        raise json_error(web.HTTPNotFound, f"no status page {request.match_info['page_id']!r}")
    request.app[RENDERS].clear()
    return web.Response(status=204)


def add_status_page_routes(app: web.Application) -> None:
    app.router.add_post(BASE, create)
    app.router.add_get(BASE, list_pages)
    app.router.add_get(f"{BASE}/{{page_id}}", show)
    app.router.add_put(f"{BASE}/{{page_id}}", replace)
    app.router.add_delete(f"{BASE}/{{page_id}}", remove)
