"""The incidents API and a monitor's confirmed status, from the events stream's Postgres
projection (engine.incidents): list and show incidents, acknowledge one, add a note.

Reading needs a token with scope `read`; acknowledging and notes `write`, and record the
token's name as who did it.
"""

from __future__ import annotations

from typing import Any, get_args

from aiohttp import web

from api.auth import requires, token_name
from api.errors import invalid, json_error, json_object, json_response
from api.state import PG
from engine import incidents, store
from engine.monitors import NUL

LIST_DEFAULT = 100


def _since_ms(text: str) -> int:
    try:
        return incidents.since_ms(text)
    except ValueError as exc:
        raise invalid("query", "since", str(exc)) from None


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= incidents.LIST_MAX:
        raise invalid("query", "limit", f"expected a whole number from 1 to {incidents.LIST_MAX}")
    return int(text)


@requires("read")
async def list_incidents(request: web.Request) -> web.Response:
    query = request.query
    state = query.get("state")
    if state is not None and state not in get_args(incidents.State):
        raise invalid("query", "state", "expected open or resolved")
    since = query.get("since")
    found = await incidents.listed(
        request.app[PG], state=state,
        monitor_id=query.get("monitor"), since_ms=None if since is None else _since_ms(since),
        limit=_limit(query.get("limit", str(LIST_DEFAULT))))
    return json_response({"incidents": found})


async def _incident(request: web.Request) -> dict[str, Any]:
    incident_id = request.match_info["incident_id"]
    found = await incidents.one(request.app[PG], incident_id)
    if found is None:
        raise json_error(web.HTTPNotFound, f"no incident {incident_id!r}")
    return found


@requires("read")
async def show(request: web.Request) -> web.Response:
    return json_response(await _incident(request))


@requires("write")
async def acknowledge(request: web.Request) -> web.Response:
    incident_id = request.match_info["incident_id"]
    if not await incidents.acknowledge(request.app[PG], incident_id, await token_name(request)):
        raise json_error(web.HTTPNotFound, f"no incident {incident_id!r}")
    return json_response(await _incident(request))


async def _note_text(request: web.Request) -> str:
    body = await json_object(request, '{"text": "..."}')
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise invalid("note", "text", "expected a non-empty string")
    if len(text) > incidents.NOTE_MAX:
        raise invalid("note", "text", f"longer than {incidents.NOTE_MAX} characters")
    if NUL in text:
        raise invalid("note", "text", "a NUL character cannot be stored")
    if extra := sorted(set(body) - {"text"}):
        raise invalid("note", extra[0], "unknown field")
    return text


@requires("write")
async def add_note(request: web.Request) -> web.Response:
    incident_id = request.match_info["incident_id"]
    text = await _note_text(request)
    if not await incidents.add_note(request.app[PG], incident_id, await token_name(request), text):
        raise json_error(web.HTTPNotFound, f"no incident {incident_id!r}")
    return json_response(await _incident(request), status=201)


@requires("read")
async def confirmed(request: web.Request) -> web.Response:
    """The monitor's confirmed status (after hysteresis and quorum) and each region's; null
    before its first transition."""
    monitor_id = request.match_info["monitor_id"]
    if not await store.exists(request.app[PG], monitor_id):
        raise json_error(web.HTTPNotFound, f"no monitor {monitor_id!r}")
    rows = [{k: v for k, v in r.items() if k != "monitor_id"}
            for r in await incidents.confirmed(request.app[PG], monitor_id)]
    own = next((r for r in rows if r["region"] == incidents.MONITOR), None)
    return json_response({
        "monitor_id": monitor_id,
        "status": own and {k: v for k, v in own.items() if k != "region"},
        "regions": [r for r in rows if r["region"] != incidents.MONITOR]})


def add_incident_routes(app: web.Application) -> None:
    base = "/api/v1/incidents"
    app.router.add_get(base, list_incidents)
    app.router.add_get(f"{base}/{{incident_id}}", show)
    app.router.add_post(f"{base}/{{incident_id}}/acknowledge", acknowledge)
    app.router.add_post(f"{base}/{{incident_id}}/notes", add_note)
    app.router.add_get("/api/v1/monitors/{monitor_id}/confirmed", confirmed)
