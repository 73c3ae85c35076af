"""The incidents API and a monitor's confirmed status, on what the real incidents sink made of
events published on a real redis-server (Postgres embedded): filters, acknowledgement and
notes by the token's name, scopes, bad input named by its field."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from api import tokens
from engine.settings import Settings
from sinks.incidents import IncidentsSink
from tests.support.events import (
    change,
    clear_projections,
    opened,
    publish,
    resolved,
    run_until_done,
)
from tests.support.servers import api_client, create_monitors

SETTINGS = Settings(sink_batch_size=100, sink_flush_ms=50, instance_id="projection-api")
NOW = int(time.time()) * 1000
HOUR = 3_600_000
WEB = {"id": "web", "kind": "http", "interval": "30s", "regions": ["eu", "us"],
       "http": {"url": "http://127.0.0.1:9/"}}


@pytest.fixture
async def incidents(r, keys, pool, ch, postgres_dsn, api) -> None:
    """web: an incident resolved two days ago and one open since an hour ago; db: one
    resolved an hour ago; and web's confirmed status for both regions and its own."""
    await clear_projections(pool, ch)
    old, recent = NOW - 50 * HOUR, NOW - HOUR
    await publish(r, keys, [
        opened("web", old), resolved("web", old, old + HOUR),
        opened("db", recent - HOUR),
        resolved("db", recent - HOUR, recent, cause="retired",
                 reason="the monitor was removed or paused"),
        change("web", recent, "up", "down", region="us"),
        change("web", recent, "down", "up", region="eu"),
        change("web", recent, "down", "up", regions={"eu": "down", "us": "up"}),
        opened("web", recent, first_check_id=f"web:eu:{recent}",
               regions={"eu": "down", "us": "up"})])
    await run_until_done(IncidentsSink(r, keys, SETTINGS, postgres_dsn=postgres_dsn), r)


async def ids(api, query: str = "", **params: str) -> list[str]:
    resp = await api.get(f"/api/v1/incidents{query}", params=params)
    assert resp.status == 200, await resp.text()
    return [i["id"] for i in (await resp.json())["incidents"]]


async def test_incidents_listed_and_filtered(api, incidents):
    web_open, db, web_old = f"web:{NOW - HOUR}", f"db:{NOW - 2 * HOUR}", f"web:{NOW - 50 * HOUR}"
    assert await ids(api) == [web_open, db, web_old]
    assert await ids(api, "?state=open") == [web_open]
    assert await ids(api, "?state=resolved") == [db, web_old]
    assert await ids(api, "?monitor=web") == [web_open, web_old]
    assert await ids(api, "?since=24h") == [web_open, db]
    since = datetime.fromtimestamp((NOW - 3 * HOUR) / 1000, UTC).isoformat()
    assert await ids(api, since=since, monitor="db") == [db]
    assert await ids(api, since=since.replace("+00:00", "Z")) == [web_open, db]
    assert await ids(api, "?limit=1") == [web_open]
    retired = await (await api.get(f"/api/v1/incidents/{db}")).json()
    assert (retired["duration_ms"], retired["reason"]) == (
        HOUR, "the monitor was removed or paused")
    one = await (await api.get(f"/api/v1/incidents/{web_old}")).json()
    assert one == {"id": web_old, "monitor_id": "web", "opened_ms": NOW - 50 * HOUR,
                   "resolved_ms": NOW - 49 * HOUR, "duration_ms": HOUR, "first_check_id": None,
                   "regions": {}, "folded_into": None, "maintenance": False,
                   "error_kind": None, "error": None, "reason": None, "acknowledged_by": None,
                   "acknowledged_at": None, "notes": []}
    resp = await api.get("/api/v1/incidents/web:1")
    assert (resp.status, (await resp.json())["error"]) == (404, "no incident 'web:1'")


@pytest.mark.parametrize(("query", "field"), [("state=closed", "state"), ("limit=0", "limit"),
                                              ("limit=1001", "limit"), ("limit=x", "limit"),
                                              ("since=yesterday", "since")])
async def test_a_bad_filter_is_named(api, query, field):
    resp = await api.get(f"/api/v1/incidents?{query}")
    assert resp.status == 422
    assert [e["field"] for e in (await resp.json())["errors"]] == [field]


async def test_acknowledge_and_notes_record_the_tokens_name(r, pool, ch, api, incidents):
    incident = f"web:{NOW - HOUR}"
    resp = await api.post(f"/api/v1/incidents/{incident}/acknowledge")
    assert resp.status == 200
    acked = await resp.json()
    assert acked["acknowledged_by"] == "test-writer"
    assert datetime.fromisoformat(acked["acknowledged_at"]).timestamp() * 1000 >= NOW - 60_000
    # A second acknowledgement, by another token, keeps the first.
    other = await tokens.create(pool, "night-shift", "write")
    async with api_client(r, pool, ch, token=other) as second:
        again = await (await second.post(f"/api/v1/incidents/{incident}/acknowledge")).json()
        assert again["acknowledged_by"] == "test-writer"
        resp = await second.post(f"/api/v1/incidents/{incident}/notes",
                                 json={"text": "rolled back the deploy"})
        assert resp.status == 201
    resp = await api.post(f"/api/v1/incidents/{incident}/notes", json={"text": "confirmed ok"})
    notes = (await resp.json())["notes"]
    assert [(n["author"], n["text"]) for n in notes] == [
        ("night-shift", "rolled back the deploy"), ("test-writer", "confirmed ok")]
    for path in ("acknowledge", "notes"):
        resp = await api.post(f"/api/v1/incidents/web:1/{path}", json={"text": "x"})
        assert resp.status == 404


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"text": ""}, 422, "text"), ({"text": 5}, 422, "text"), ({}, 422, "text"),
    ({"text": "a\x00b"}, 422, "text"), ({"text": "x" * 10_001}, 422, "text"),
    ({"text": "ok", "by": "someone else"}, 422, "by"), ([], 400, None)])
async def test_a_bad_note_is_refused_and_nothing_written(api, pool, incidents, body, status,
                                                         field):
    resp = await api.post(f"/api/v1/incidents/web:{NOW - HOUR}/notes", json=body)
    assert resp.status == status
    if field:
        assert [e["field"] for e in (await resp.json())["errors"]] == [field]
    assert await pool.fetchval("SELECT count(*) FROM incident_notes") == 0


async def test_reading_needs_read_and_changing_needs_write(r, pool, ch, incidents):
    reader = await tokens.create(pool, "reader", "read")
    async with api_client(r, pool, ch, token=reader) as api:
        assert (await api.get("/api/v1/incidents")).status == 200
        resp = await api.post(f"/api/v1/incidents/web:{NOW - HOUR}/acknowledge")
        assert (resp.status, (await resp.json())["error"]) == (403, "insufficient_scope")
    async with api_client(r, pool, ch) as anonymous:
        assert (await anonymous.get("/api/v1/incidents")).status == 401
        assert (await anonymous.get("/api/v1/monitors/web/confirmed")).status == 401
    assert await pool.fetchval("SELECT acknowledged_by FROM incidents "
                               "WHERE id = $1", f"web:{NOW - HOUR}") is None


async def test_a_monitors_confirmed_status(api, incidents):
    await create_monitors(api, [WEB, {**WEB, "id": "quiet"}])
    body = await (await api.get("/api/v1/monitors/web/confirmed")).json()
    recent = NOW - HOUR
    assert body == {
        "monitor_id": "web",
        "status": {"status": "down", "previous": "up", "since_ms": recent,
                   "event_id": f"monitor.changed:web:eu:{recent}"},
        "regions": [
            {"region": "eu", "status": "down", "previous": "up", "since_ms": recent,
             "event_id": f"status.changed:web:eu:{recent}"},
            {"region": "us", "status": "up", "previous": "down", "since_ms": recent,
             "event_id": f"status.changed:web:us:{recent}"}]}
    quiet = await (await api.get("/api/v1/monitors/quiet/confirmed")).json()
    assert quiet == {"monitor_id": "quiet", "status": None, "regions": []}
    assert (await api.get("/api/v1/monitors/nothing/confirmed")).status == 404


async def test_the_routes_are_in_the_openapi_document(client):
    paths = (await (await client.get("/openapi.json")).json())["paths"]
    assert set(paths["/api/v1/incidents"]) == {"get"}
    assert set(paths["/api/v1/incidents/{incident_id}/notes"]) == {"post"}
    assert set(paths["/api/v1/incidents/{incident_id}/acknowledge"]) == {"post"}
    assert set(paths["/api/v1/monitors/{monitor_id}/confirmed"]) == {"get"}
