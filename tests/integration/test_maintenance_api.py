"""The maintenance windows API on real Postgres and chDB: create, list, read, replace, delete;
validation errors naming the field with nothing written; the scopes; and uptime leaving out
what a window covered, saying how much."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from api import tokens
from executors.kinds import SCHEMA
from sinks.clickhouse import COLUMNS, row
from tests.support.helpers import check_result, store_monitors
from tests.support.servers import api_client

NIGHTLY = {"id": "nightly", "name": "backups", "tags": ["db"], "cron": "30 2 * * *",
           "duration": "2h", "timezone": "Europe/Berlin"}


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


@pytest.fixture
async def windows(pool):
    await pool.execute("TRUNCATE maintenance_windows")


async def test_a_window_is_created_read_replaced_and_deleted(api, windows):
    resp = await api.post("/api/v1/maintenance", json=NIGHTLY)
    body = await resp.json()
    assert resp.status == 201, body
    assert {k: body[k] for k in ("id", "mode", "tags", "cron", "duration_ms", "timezone",
                                 "source", "version")} == {
        "id": "nightly", "mode": "mute", "tags": ["db"], "cron": "30 2 * * *",
        "duration_ms": 7_200_000, "timezone": "Europe/Berlin", "source": "api", "version": 1}
    # Its next stretches in its own zone: 02:30 local, two hours.
    assert len(body["next"]) == 3
    first = body["next"][0]
    assert (first["start"][11:16], first["end"][11:16]) == ("02:30", "04:30")
    assert first["start"][-6:] in ("+01:00", "+02:00")
    assert (await api.post("/api/v1/maintenance", json=NIGHTLY)).status == 409

    listed = await (await api.get("/api/v1/maintenance")).json()
    assert [w["id"] for w in listed["windows"]] == ["nightly"]
    shown = await (await api.get("/api/v1/maintenance/nightly")).json()
    assert shown == body

    same = await api.put("/api/v1/maintenance/nightly", json=NIGHTLY)
    assert (same.status, (await same.json())["version"]) == (200, 1)  # nothing changed
    changed = await api.put("/api/v1/maintenance/nightly", json={**NIGHTLY, "mode": "pause"})
    assert (changed.status, (await changed.json())["version"]) == (200, 2)
    now = int(time.time() * 1000)
    one_off = {"monitors": ["web"], "start": iso(now - 60_000), "end": iso(now + 60_000)}
    made = await api.put("/api/v1/maintenance/move", json=one_off)
    made_body = await made.json()
    assert made.status == 201
    assert made_body["active_until"] == iso(now + 60_000)

    assert (await api.delete("/api/v1/maintenance/nightly")).status == 204
    assert (await api.get("/api/v1/maintenance/nightly")).status == 404
    assert (await api.delete("/api/v1/maintenance/nightly")).status == 404
    listed = await (await api.get("/api/v1/maintenance")).json()
    assert [w["id"] for w in listed["windows"]] == ["move"]


async def test_the_list_filters_by_the_monitor_a_window_covers(api, pool, windows):
    await store_monitors(pool, SCHEMA.parse([
        {"id": "pg", "kind": "tcp", "tags": ["db"], "tcp": {"host": "127.0.0.1", "port": 9}},
        {"id": "web", "kind": "tcp", "tcp": {"host": "127.0.0.1", "port": 9}}]), source="api")
    for body in (NIGHTLY, {**NIGHTLY, "id": "web-deploy", "tags": [], "monitors": ["web"]}):
        assert (await api.post("/api/v1/maintenance", json=body)).status == 201
    for monitor, expected in (("pg", ["nightly"]), ("web", ["web-deploy"]), ("nope", [])):
        listed = await (await api.get("/api/v1/maintenance", params={"monitor": monitor})).json()
        assert [w["id"] for w in listed["windows"]] == expected


@pytest.mark.parametrize(("change", "field"), [
    ({"timezone": "Europe/Atlantis"}, "timezone"),
    ({"cron": None, "rrule": "DTSTART:20260101T023000\nRRULE:FREQ=DAILY;COUNT=many"}, "rrule"),
    ({"cron": "30 25 * * *"}, "cron"),
    ({"duration": "0s"}, "duration_ms"),
    ({"cron": None, "duration": None, "timezone": None, "start": "2026-05-02T00:00:00Z",
      "end": "2026-05-01T00:00:00Z"}, "end"),
    ({"name": "x" * 201}, "name"),
    ({"tags": ["a\x00b"]}, "tags.0"),
    ({"monitors": ["ok"] * 1_001}, "monitors"),
])
async def test_a_bad_window_is_a_422_naming_the_field(api, pool, windows, change, field):
    body = {k: v for k, v in {**NIGHTLY, **change}.items() if v is not None}
    for resp in (await api.post("/api/v1/maintenance", json=body),
                 await api.put("/api/v1/maintenance/nightly", json=body)):
        answer = await resp.json()
        assert resp.status == 422, answer
        assert answer["error"] == "invalid maintenance window"
        assert [e["field"] for e in answer["errors"]] == [field]
    assert await pool.fetchval("SELECT count(*) FROM maintenance_windows") == 0


async def test_a_body_that_is_no_window_says_so(api, windows):
    resp = await api.post("/api/v1/maintenance", data=b"[1]")
    assert (resp.status, (await resp.json())["error"]) == (
        400, "body: expected a JSON object (a maintenance window)")
    resp = await api.put("/api/v1/maintenance/a", json={**NIGHTLY, "id": "b"})
    assert [e["field"] for e in (await resp.json())["errors"]] == ["id"]


async def test_reading_needs_read_and_changing_needs_write(r, pool, ch, clean, windows):
    await pool.execute("TRUNCATE api_tokens")
    reader = await tokens.create(pool, "reader", "read")
    async with api_client(r, pool, ch) as anonymous:
        assert (await anonymous.get("/api/v1/maintenance")).status == 401
    async with api_client(r, pool, ch, token=reader) as api:
        assert (await api.get("/api/v1/maintenance")).status == 200
        assert (await api.post("/api/v1/maintenance", json=NIGHTLY)).status == 403
        assert (await api.delete("/api/v1/maintenance/nightly")).status == 403
    assert await pool.fetchval("SELECT count(*) FROM maintenance_windows") == 0


async def test_uptime_leaves_out_maintenance_and_says_how_much(api, pool, ch, windows):
    await store_monitors(pool, SCHEMA.parse([
        {"id": "web", "kind": "http", "interval": "10s", "http": {"url": "http://127.0.0.1/"}},
    ]), source="api")
    now = int(time.time() * 1000)
    # Down for 20 minutes, inside a muted window of half an hour that ended ten minutes ago.
    window = {"id": "deploy", "monitors": ["web"], "start": iso(now - 40 * 60_000),
              "end": iso(now - 10 * 60_000)}
    assert (await api.post("/api/v1/maintenance", json=window)).status == 201
    results = [check_result("web", now - i * 60_000, "up", latency_ms=10.0) for i in (1, 2, 3)]
    results += [check_result("web", now - i * 60_000, "down", maintenance=True)
                for i in range(15, 35)]
    await ch.insert("check_results", [row(r) for r in results], COLUMNS)
    data = await (await api.get("/api/v1/monitors/web/uptime?window=1h")).json()
    assert (data["checks"], data["up"], data["down"], data["uptime_percent"]) == (3, 3, 0, 100)
    assert data["maintenance"] == {"excluded_checks": 20, "excluded_ms": 30 * 60_000}
    # A window asked for that starts inside the maintenance counts only its own part of it.
    data = await (await api.get("/api/v1/monitors/web/uptime?window=20m")).json()
    assert data["maintenance"]["excluded_ms"] == pytest.approx(10 * 60_000, abs=5_000)


async def test_a_stored_window_that_no_longer_validates_is_shown_with_its_problem(
        api, pool, windows):
    """Written under other rules (an older release, a hand-made row): listed with what is
    wrong, covering nothing, never a 500."""
    await store_monitors(pool, SCHEMA.parse([
        {"id": "pg", "kind": "tcp", "tags": ["db"], "tcp": {"host": "127.0.0.1", "port": 9}},
    ]), source="api")
    await pool.execute("INSERT INTO maintenance_windows (id, definition, source) VALUES "
                       "('old', $1::jsonb, 'api')",
                       '{"id": "old", "tags": ["db"], "cron": "30 2 * * *", '
                       '"duration_ms": 3600000, "timezone": "Europe/Gone"}')
    listed = await api.get("/api/v1/maintenance")
    [old] = (await listed.json())["windows"]
    assert old["invalid"] == [{"field": "timezone",
                               "message": "'Europe/Gone' is not an IANA time zone"}]
    covering = await (await api.get("/api/v1/maintenance?monitor=pg")).json()
    assert covering["windows"] == []
    uptime = await api.get("/api/v1/monitors/pg/uptime?window=1h")
    assert (await uptime.json())["maintenance"]["excluded_ms"] == 0
