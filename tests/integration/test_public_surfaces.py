"""Nothing public leaks (architecture invariant 10, issue 9 item 1): the status page and the
open status API show a monitor's status, latency, since when and error class; what its probe
read (the error text, a status code) needs a token with scope read. The result is written by
the real status sink, as a tcp monitor aimed at Vigil's own Redis left it."""

from __future__ import annotations

import pytest

from api import tokens
from api.status import PUBLIC
from engine import incidents, status_pages
from engine.connections import redis_client
from engine.settings import Settings
from engine.status_pages import Page
from executors.kinds import SCHEMA
from sinks.status import StatusSink
from tests.support.events import change
from tests.support.helpers import check_result, free_port, store_monitors
from tests.support.servers import api_client

# What Redis answered to `CONFIG GET dir`: the reply a hostile monitor wanted to read.
SECRET = "/var/lib/redis-secret-7f3a"
ERROR = f"unexpected reply: *2\r\n$3\r\ndir\r\n${len(SECRET)}\r\n{SECRET}\r\n"


async def confirmed_down(pool, *monitor_ids: str) -> None:
    """The evaluator's verdict, which the status page shows: down."""
    async with pool.acquire() as conn:
        await incidents.project(conn, [change(m, 5_000, "down") for m in monitor_ids])


@pytest.fixture
async def probed(r, keys, pool, postgres_dsn, clean) -> None:
    await store_monitors(pool, SCHEMA.parse([
        {"id": "cache", "kind": "tcp", "interval": "10s", "tags": ["shown"],
         "tcp": {"host": "127.0.0.1", "port": 6379}},
        {"id": "web", "kind": "http", "interval": "10s", "tags": ["shown"],
         "http": {"url": "http://127.0.0.1:9/"}}]), source="api")
    await pool.execute("TRUNCATE status_pages, confirmed_status")
    await status_pages.upsert(pool, Page.model_validate(
        {"id": "default", "title": "Status", "groups": [{"name": "All", "tags": ["shown"]}]}),
        "api")
    await confirmed_down(pool, "cache", "web")
    sink = StatusSink(r, keys, Settings(instance_id="sink-public"), postgres_dsn=postgres_dsn)
    await sink.start()
    try:
        await sink.write([
            check_result("cache", 5_000, "down", latency_ms=3.5, error_kind="unexpected_reply",
                         error=ERROR),
            check_result("web", 5_000, "down", latency_ms=7.0, status_code=503,
                         error_kind="status", error=f"status 503: body: {SECRET}")])
    finally:
        await sink.close()


async def test_the_status_page_shows_the_error_class_not_the_probe_output(client, probed):
    page = await (await client.get("/")).text()
    assert SECRET not in page
    assert "503" not in page
    assert "unexpected_reply" in page
    assert "down" in page


async def test_the_open_status_api_shows_status_latency_since_and_class_only(client, probed):
    resp = await client.get("/api/v1/status")
    assert SECRET not in await resp.text()
    rows = {m["id"]: m for m in (await resp.json())["monitors"]}
    assert set(rows["cache"]) == set(PUBLIC)
    assert (rows["cache"]["status"], rows["cache"]["latency_ms"], rows["cache"]["since_ms"],
            rows["cache"]["error_kind"]) == ("down", 3.5, 5_000, "unexpected_reply")
    assert "status_code" not in rows["web"]


async def test_a_read_token_sees_the_details(r, pool, ch, probed):
    token = await tokens.create(pool, "reader", "read")
    async with api_client(r, pool, ch, token=token) as reader:
        resp = await reader.get("/api/v1/monitors/cache/status")
        assert resp.status == 200
        [row] = (await resp.json())["regions"]
        assert (row["error"], row["error_kind"]) == (ERROR, "unexpected_reply")
        every = {m["id"]: m for m in (await (await reader.get("/api/v1/status")).json())[
            "monitors"]}
        assert (every["web"]["status_code"], every["web"]["error"]) == (
            503, f"status 503: body: {SECRET}")
        assert (await reader.get("/api/v1/monitors/nope/status")).status == 404
        # A token that is not valid is refused, not quietly shown the public view.
        bad = await reader.get("/api/v1/status", headers={"Authorization": "Bearer vigil_no"})
        assert bad.status == 401
    async with api_client(r, pool, ch) as anyone:
        assert (await anyone.get("/api/v1/monitors/cache/status")).status == 401


async def test_a_monitor_with_public_details_shows_its_error_text_escaped(
        client, r, keys, pool, postgres_dsn, probed):
    await store_monitors(pool, SCHEMA.parse([
        {"id": "open", "kind": "http", "interval": "10s", "public_details": True,
         "tags": ["shown"], "http": {"url": "http://127.0.0.1:9/"}}]), source="api")
    await confirmed_down(pool, "open")
    sink = StatusSink(r, keys, Settings(instance_id="sink-public"), postgres_dsn=postgres_dsn)
    await sink.start()
    try:
        await sink.write([check_result("open", 5_000, "down", status_code=500, error_kind="status",
                                       error="status 500: <script>alert(1)</script>")])
    finally:
        await sink.close()
    rows = {m["id"]: m for m in (await (await client.get("/api/v1/status")).json())["monitors"]}
    assert (rows["open"]["status_code"], rows["open"]["error"]) == (
        500, "status 500: <script>alert(1)</script>")
    assert "error" not in rows["web"]  # the others still show nothing of theirs
    page = await (await client.get("/")).text()
    assert "status: status 500: &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>" not in page
    assert SECRET not in page


async def test_health_names_a_failure_by_its_class_only(pool, ch, clean):
    port = free_port()  # nothing listens there
    gone = redis_client(f"redis://:hunter2@127.0.0.1:{port}/0")
    try:
        async with api_client(gone, pool, ch) as c:
            resp = await c.get("/health")
            body = await resp.text()
    finally:
        await gone.aclose()
    assert resp.status == 503
    assert '"redis":"error: ConnectionError"' in body
    assert str(port) not in body
