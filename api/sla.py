"""`GET /api/v1/monitors/{monitor_id}/sla?from=&to=&by=day|week|month`: a monitor's SLA per
period and in total (engine.rollups.report): uptime by time and by check count, downtime,
what Vigil could not check, maintenance left out, incidents and MTTR, latency quantiles.
`GET /api/v1/sla?from=&to=&by=&tag=`: the same for every monitor (with the tag), what
`vigil report` prints.

Needs a token with scope `read`: the figures are the monitor's, public or not. `from`/`to`
are ISO 8601 dates or times (a date alone as `to` takes in that whole day); the default is
the last 30 days up to now; a range is at most 400 days, the retention.
"""

from __future__ import annotations

import time

from aiohttp import web

from api.auth import requires
from api.errors import invalid, json_error, json_response
from api.state import CH, PG
from engine import maintenance_store, rollups, store

DEFAULT_RANGE_MS = 30 * rollups.DAY_MS


def _moment(request: web.Request, name: str, default: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        return rollups.moment_ms(text, end=name == "to")
    except ValueError as exc:
        raise invalid("query", name, str(exc)) from None


def _range(request: web.Request, now: int) -> tuple[int, int, str]:
    until = _moment(request, "to", now)
    since = _moment(request, "from", until - DEFAULT_RANGE_MS)
    by = request.query.get("by", "day")
    if by not in rollups.PERIODS:
        raise invalid("query", "by", f"expected one of {', '.join(rollups.PERIODS)}")
    try:
        rollups.checked_range(since, until)
    except ValueError as exc:
        raise invalid("query", "to", str(exc)) from None
    return since, until, by


@requires("read")
async def sla(request: web.Request) -> web.Response:
    monitor_id = request.match_info["monitor_id"]
    now = int(time.time() * 1000)
    since, until, by = _range(request, now)
    pool = request.app[PG]
    if not await store.exists(pool, monitor_id):
        raise json_error(web.HTTPNotFound, f"no monitor {monitor_id}")
    windows = {monitor_id: await maintenance_store.covering(pool, monitor_id)}
    found = await rollups.report(request.app[CH], pool, [monitor_id], since, until, by, now,
                                 windows)
    return json_response({"monitor_id": monitor_id, "by": by, **found[monitor_id]})


@requires("read")
async def fleet(request: web.Request) -> web.Response:
    now = int(time.time() * 1000)
    since, until, by = _range(request, now)
    return json_response(await rollups.fleet(request.app[CH], request.app[PG],
                                             request.query.get("tag"), since, until, by, now))


def add_sla_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/monitors/{monitor_id}/sla", sla)
    app.router.add_get("/api/v1/sla", fleet)
