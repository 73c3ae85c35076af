"""Open routes: health, current status, uptime and latency from ClickHouse, metrics; and a
monitor's status in detail, for a token.

Nothing public leaks (architecture invariant 10): what anyone may see of a monitor is where it
stands (status, latency, since when) and the class of a failure (`error_kind`). What a probe
read from its target (error text, a status code, a reply) may be the very secret a hostile
monitor was aimed at, so it needs a token with scope `read`, unless the monitor shows it
publicly (`public_details`, off by default).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from api.auth import grant_of, requires
from api.errors import json_error, json_response
from api.state import CH, PG, REDIS
from engine import maintenance_store, store
from engine.durations import parse_duration_ms
from engine.exporter import Exporter
from engine.maintenance import covered_ms

MAX_WINDOW_MS = 400 * 86_400_000
# Uptime counts the target's answers only: `error` and `expired` are Vigil's own failures.
# Results checked inside a muted maintenance window are left out, and counted apart.
UPTIME_SQL = """
SELECT countIf(outcome IN ('up', 'degraded') AND NOT maintenance) AS up,
       countIf(outcome = 'down' AND NOT maintenance) AS down,
       countIf(outcome = 'degraded' AND NOT maintenance) AS degraded,
       countIf(outcome = 'error' AND NOT maintenance) AS errors,
       countIf(outcome = 'expired' AND NOT maintenance) AS expired,
       quantilesIf(0.5, 0.95, 0.99)(latency_ms,
                                    outcome IN ('up', 'degraded') AND NOT maintenance) AS q,
       countIf(maintenance) AS in_maintenance
FROM check_results FINAL
WHERE monitor_id = {monitor_id:String}
  AND scheduled >= now64(3) - toIntervalMillisecond({window_ms:UInt64})
"""
PUBLIC = ("id", "name", "kind", "enabled", "region", "status", "since_ms", "finished_ms",
          "latency_ms", "error_kind")
DETAILS = ("status_code", "error")


def public(row: dict[str, Any]) -> dict[str, Any]:
    """What anyone may see of a status row (store.status_rows)."""
    shown = PUBLIC + DETAILS if row["public_details"] else PUBLIC
    return {k: row[k] for k in shown}


async def _probe(name: str, coro: Any) -> tuple[str, str]:
    try:
        async with asyncio.timeout(2):
            await coro
        return name, "ok"
    except Exception as exc:
        # The class only: the message names Vigil's own servers (addresses, users).
        return name, f"error: {type(exc).__name__}"


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
    """Every monitor's status per region; in detail for a valid token (every scope reads)."""
    detailed = await grant_of(request) is not None
    rows = await store.status_rows(request.app[PG])
    return json_response({"monitors": rows if detailed else [public(r) for r in rows]})


@requires("read")
async def monitor_status(request: web.Request) -> web.Response:
    monitor_id = request.match_info["monitor_id"]
    rows = [r for r in await store.status_rows(request.app[PG]) if r["id"] == monitor_id]
    if not rows:
        raise json_error(web.HTTPNotFound, f"no monitor {monitor_id}")
    return json_response({"monitor_id": monitor_id, "regions": rows})


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
    up, down, degraded, errors, expired, q, in_maintenance = rows[0]
    now = int(time.time() * 1000)
    windows = await maintenance_store.covering(request.app[PG], monitor_id)
    answered = up + down
    has_latency = up > 0
    return json_response({
        "monitor_id": monitor_id, "window": window, "checks": answered + errors + expired,
        "up": up, "down": down, "degraded": degraded, "errors": errors, "expired": expired,
        "uptime_percent": round(100 * up / answered, 4) if answered else None,
        "latency_ms": {"p50": q[0] if has_latency else None, "p95": q[1] if has_latency else None,
                       "p99": q[2] if has_latency else None},
        # What the figures leave out: the checks run muted, and the time the monitor's
        # windows (as they are defined now) covered within the window asked for, paused or
        # muted alike.
        "maintenance": {"excluded_checks": in_maintenance,
                        "excluded_ms": covered_ms(windows, now - window_ms, now)},
    })


# What /metrics shows: the metrics of the roles this process runs (api.app.make_app).
EXPORTER = web.AppKey("exporter", Exporter)


async def metrics(request: web.Request) -> web.Response:
    return await request.app[EXPORTER].handle(request)


def add_status_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/api/v1/monitors/{monitor_id}/uptime", uptime)
    app.router.add_get("/api/v1/monitors/{monitor_id}/status", monitor_status)
