"""The status page (`/`): the public view of every monitor (api.status.public), as HTML that
the security headers (api.headers) let load nothing but its own stylesheet."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from api.state import PG
from api.status import public
from engine import store


def _since(ms: int | None) -> str:
    return "" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def row_html(r: dict[str, Any]) -> str:
    """One public row; every cell escaped (names and error text are anyone's input)."""
    state = str(r["status"] or "pending")
    latency = "" if r["latency_ms"] is None else f"{r['latency_ms']:.1f} ms"
    failure = ": ".join(str(p) for p in (r["error_kind"], r.get("error")) if p)
    cells = (r["id"], r["name"] or "", r["kind"], r["region"] or "-", state,
             _since(r["since_ms"]), latency, failure)
    return f"<tr class='{html.escape(state)}'>" + "".join(
        f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"


async def status_page(request: web.Request) -> web.Response:
    rows = "".join(row_html(public(r)) for r in await store.status_rows(request.app[PG]))
    # The style is a file of its own: the page's policy allows no inline anything.
    page = ("<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=10>"
            "<title>Vigil status</title><link rel=stylesheet href=/status.css>"
            "<h1>Vigil status</h1><table><tr><th>id</th><th>name</th><th>kind</th>"
            "<th>region</th><th>status</th><th>since</th><th>latency</th><th>error</th></tr>"
            f"{rows}</table>")
    return web.Response(text=page, content_type="text/html")


async def stylesheet(_request: web.Request) -> web.Response:
    return web.Response(text=_CSS, content_type="text/css",
                        headers={"Cache-Control": "public, max-age=3600"})


_CSS = ("body{font-family:system-ui,sans-serif;margin:2rem}table{border-collapse:collapse}"
        "td,th{padding:.3rem .8rem;border-bottom:1px solid #ddd;text-align:left}"
        ".up td:nth-child(5){color:#080}.down td:nth-child(5){color:#c00}"
        ".degraded td:nth-child(5){color:#b60}")


def add_page_routes(app: web.Application) -> None:
    app.router.add_get("/", status_page)
    app.router.add_get("/status.css", stylesheet)
