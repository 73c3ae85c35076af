"""The HTTP API on real Redis, Postgres and chDB."""

from __future__ import annotations

import time

import pytest

from engine import status_pages
from engine.events import Outcome
from engine.status_pages import Page
from executors.kinds import SCHEMA
from sinks.clickhouse import COLUMNS, row
from tests.support.helpers import check_result, store_monitors


async def test_health_checks_every_backend(client):
    resp = await client.get("/health")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "checks": {
        "redis": "ok", "postgres": "ok", "clickhouse": "ok"}}


async def test_status_and_uptime(client, pool, ch):
    monitors = SCHEMA.parse([
        {"id": "web", "kind": "http", "interval": "10s", "http": {"url": "http://127.0.0.1/"}},
        {"id": "new", "kind": "tcp", "interval": "10s", "tcp": {"host": "127.0.0.1", "port": 1}},
    ])
    await store_monitors(pool, monitors, source="file")
    await pool.execute("""INSERT INTO monitor_status (monitor_id, region, status, since_ms,
        check_id, scheduled_ms, finished_ms, latency_ms) VALUES
        ('web', 'default', 'up', 1, 'web:default:1', 1, 2, 12.5)""")
    body = await (await client.get("/api/v1/status")).json()
    by_id = {m["id"]: m for m in body["monitors"]}
    assert by_id["web"]["status"] == "up"
    assert by_id["web"]["latency_ms"] == 12.5
    assert by_id["new"]["status"] is None

    now = int(time.time() * 1000) - 60_000

    def result(scheduled_ms: int, outcome: Outcome) -> list[object]:
        return row(check_result("web", scheduled_ms, outcome, latency_ms=19.0))

    rows = [result(now - i * 1000, "up") for i in range(1, 9)]
    rows += [result(now - 9_000, "down"), result(now - 10_000, "expired")]
    rows += [result(now - 50 * 3_600_000, "down")]  # outside the 24 h window
    await ch.insert("check_results", rows, COLUMNS)
    resp = await client.get("/api/v1/monitors/web/uptime", params={"window": "24h"})
    data = await resp.json()
    assert resp.status == 200
    assert (data["up"], data["down"], data["expired"], data["checks"]) == (8, 1, 1, 10)
    assert data["uptime_percent"] == pytest.approx(100 * 8 / 9, abs=1e-3)
    assert data["latency_ms"]["p50"] == pytest.approx(19.0)
    assert set(data["latency_ms"]) == {"p50", "p95", "p99"}

    assert (await client.get("/api/v1/monitors/web/uptime?window=soon")).status == 422
    assert (await client.get("/api/v1/monitors/nope/uptime")).status == 404


async def test_uptime_counts_a_redelivered_row_once(client, pool, ch):
    """A sink that wrote its batch and died before XACK writes it again; a late re-run adds an
    `expired` for a check that was answered. Each check counts once (FINAL): without it the
    uptime read 6 checks, 3 up, 2 down and 1 expired."""
    await store_monitors(pool, SCHEMA.parse([
        {"id": "web", "kind": "http", "interval": "10s", "http": {"url": "http://127.0.0.1/"}},
    ]), source="file")
    now = int(time.time() * 1000) - 60_000
    up = [check_result("web", now - i * 10_000, "up", latency_ms=20.0) for i in (1, 2)]
    down = check_result("web", now - 30_000, "down", error_kind="connect")
    rerun = check_result("web", up[0].scheduled_ms, "expired", started_ms=now,
                         finished_ms=now, error_kind="expired")
    # Merges stopped, so the duplicates are still there when the API reads: only FINAL can
    # fold them.
    await ch.command("SYSTEM STOP MERGES check_results")
    try:
        await ch.insert("check_results", [row(r) for r in (*up, down)], COLUMNS)
        await ch.insert("check_results", [row(up[1]), row(down), row(rerun)], COLUMNS)
        [(stored,)] = await ch.rows("SELECT count() FROM check_results")
        assert stored == 6
        data = await (await client.get("/api/v1/monitors/web/uptime?window=1h")).json()
    finally:
        await ch.command("SYSTEM START MERGES check_results")
    assert (data["checks"], data["up"], data["down"], data["expired"]) == (3, 2, 1, 0)
    assert data["uptime_percent"] == pytest.approx(100 * 2 / 3, abs=1e-3)


async def test_status_page_and_metrics(client, pool):
    await store_monitors(pool, SCHEMA.parse([
        {"id": "web", "name": "<b>Web</b>", "kind": "tcp", "interval": "10s",
         "tcp": {"host": "127.0.0.1", "port": 1}}]), source="file")
    await pool.execute("TRUNCATE status_pages")
    await status_pages.upsert(pool, Page.model_validate(
        {"id": "default", "title": "Status", "groups": [{"name": "All", "monitors": ["web"]}]}),
        "api")
    page = await (await client.get("/")).text()
    assert "&lt;b&gt;Web&lt;/b&gt;" in page
    metrics = await (await client.get("/metrics")).text()
    # The api's own: the gauges of every stream, not the scheduler's counters.
    assert "vigil_stream_length" in metrics
    assert "vigil_checks_dispatched_total" not in metrics
