"""Open routes: health, current status, uptime and latency from ClickHouse, metrics, the
status page."""

from __future__ import annotations

import asyncio
import html
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.errors import json_error, json_response
from api.state import CH, PG, REDIS
from engine import store
from engine.durations import parse_duration_ms
from engine.text import clip

MAX_WINDOW_MS = 400 * 86_400_000
# Uptime counts the target's answers only: `error` and `expired` are Vigil's own failures.
UPTIME_SQL = """
SELECT countIf(outcome IN ('up', 'degraded')) AS up,
       countIf(outcome = 'down') AS down,
       countIf(outcome = 'degraded') AS degraded,
       countIf(outcome = 'error') AS errors,
       countIf(outcome = 'expired') AS expired,
       quantilesIf(0.5, 0.95, 0.99)(latency_ms, outcome IN ('up', 'degraded')) AS q
FROM check_results FINAL
WHERE monitor_id = {monitor_id:String}
  AND scheduled >= now64(3) - toIntervalMillisecond({window_ms:UInt64})
"""

async def _probe(name: str, coro: Any) -> tuple[str, str]:
    try:
        async with asyncio.timeout(2):
            await coro
        return name, "ok"
    except Exception as exc:
        return name, clip(f"error: {exc!r}")


async def health(request: web.Request) -> web.Response:
    app = request.app
    probes = await asyncio.gather(
        _probe("redis", app[REDIS].ping()),
        _probe("postgres", app[PG].fetchval("SELECT 1")),
        _probe("clickhouse", app[CH].command("SELECT 1")),
    )
    checks = dict(probes)
    ok = all(v == "ok" for v in checks.values())
    return json_response({"status": "ok" if ok else "degraded", "checks": checks},
                         status=200 if ok else 503)


async def status(request: web.Request) -> web.Response:
    return json_response({"monitors": await store.status_rows(request.app[PG])})


async def uptime(request: web.Request) -> web.Response:
    monitor_id = request.match_info["monitor_id"]
    window = request.query.get("window", "24h")
    try:
        window_ms = parse_duration_ms(window)
    except ValueError as exc:
        raise json_error(web.HTTPUnprocessableEntity, f"window: {exc}") from None
    if not 0 < window_ms <= MAX_WINDOW_MS:
        raise json_error(web.HTTPUnprocessableEntity, "window: must be between 1ms and 400d")
    if not await store.exists(request.app[PG], monitor_id):
        raise json_error(web.HTTPNotFound, f"no monitor {monitor_id}")
    rows = await request.app[CH].rows(UPTIME_SQL, {"monitor_id": monitor_id,
                                                   "window_ms": window_ms})
    up, down, degraded, errors, expired, q = rows[0]
    answered = up + down
    has_latency = up > 0
    return json_response({
        "monitor_id": monitor_id, "window": window, "checks": answered + errors + expired,
        "up": up, "down": down, "degraded": degraded, "errors": errors, "expired": expired,
        "uptime_percent": round(100 * up / answered, 4) if answered else None,
        "latency_ms": {"p50": q[0] if has_latency else None, "p95": q[1] if has_latency else None,
                       "p99": q[2] if has_latency else None},
    })


async def metrics(_request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _row_html(r: dict[str, Any]) -> str:
    state = str(r["status"] or "pending")
    latency = "" if r["latency_ms"] is None else f"{r['latency_ms']:.1f} ms"
    cells = (r["id"], r["name"] or "", r["kind"], r["region"] or "-", state, latency,
             r["error"] or "")
    return f"<tr class='{html.escape(state)}'>" + "".join(
        f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"


async def status_page(request: web.Request) -> web.Response:
    rows = "".join(_row_html(r) for r in await store.status_rows(request.app[PG]))
    page = ("<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=10>"
            f"<title>Vigil status</title><style>{_CSS}</style><h1>Vigil status</h1>"
            "<table><tr><th>id</th><th>name</th><th>kind</th><th>region</th><th>status</th>"
            f"<th>latency</th><th>error</th></tr>{rows}</table>")
    return web.Response(text=page, content_type="text/html")


_CSS = ("body{font-family:system-ui,sans-serif;margin:2rem}table{border-collapse:collapse}"
        "td,th{padding:.3rem .8rem;border-bottom:1px solid #ddd;text-align:left}"
        ".up td:nth-child(5){color:#080}.down td:nth-child(5){color:#c00}"
        ".degraded td:nth-child(5){color:#b60}")


def add_status_routes(app: web.Application) -> None:
    app.router.add_get("/", status_page)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/api/v1/monitors/{monitor_id}/uptime", uptime)
