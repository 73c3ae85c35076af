"""Status pages on real Postgres, chDB and Redis: the definitions (API and `monitors apply`),
their validation errors naming the field with nothing written, the set of monitors shown
publicly, the rendered page holding what the test wrote (and no probe detail that is not
public), and the live stream delivering what the test adds to the events stream."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.exceptions import RedisError
from structlog.testing import capture_logs

from api import live as live_module
from api import tokens
from api.live import QUEUE_MAX, Live
from engine import incidents, maintenance_store, status_pages
from engine.connections import redis_client
from engine.keys import Keys
from engine.maintenance import Window
from engine.monitors import SpecError
from engine.settings import Settings
from engine.status_pages import Page, PageError
from executors.kinds import SCHEMA
from sinks.clickhouse import COLUMNS, row
from sinks.status import StatusSink
from tests.support.events import change, clear_projections, opened, publish, resolved
from tests.support.helpers import check_result, free_port, store_monitors, wait_for
from tests.support.servers import api_client
from vigil import admin
from vigil.embedded import RedisServer


def tcp(monitor_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": monitor_id, "kind": "tcp", "tcp": {"host": "127.0.0.1", "port": 9}, **extra}


@pytest.fixture
async def pages(pool, clean):
    await pool.execute("TRUNCATE status_pages")


async def test_shown_monitors_are_those_a_page_names_or_tags(pool, pages):
    await store_monitors(pool, SCHEMA.parse([
        tcp("api", tags=["web"]), tcp("web", tags=["web", "edge"]), tcp("db", tags=["db"]),
        tcp("private"), tcp("cron", tags=["batch"])]), source="api")
    assert await status_pages.shown_monitors(pool) == set()
    await status_pages.upsert(pool, Page.model_validate({
        "id": "public", "title": "Public", "groups": [
            {"name": "Web", "tags": ["edge"]}, {"name": "Data", "monitors": ["db"]}]}), "api")
    await status_pages.upsert(pool, Page.model_validate({
        "id": "other", "title": "Other", "groups": [
            {"name": "All web", "tags": ["web"], "monitors": [{"id": "cron", "bar": False}]}]}),
        "api")
    assert await status_pages.shown_monitors(pool) == {"api", "web", "db", "cron"}
    # A monitor removed since is not shown, though a page still names it.
    await pool.execute("DELETE FROM monitors WHERE id = 'db'")
    assert await status_pages.shown_monitors(pool) == {"api", "web", "cron"}
    assert await status_pages.delete(pool, "other")
    assert await status_pages.shown_monitors(pool) == {"web"}


async def test_a_page_naming_an_unknown_monitor_says_which_and_writes_nothing(pool, pages):
    await store_monitors(pool, SCHEMA.parse([tcp("api")]), source="api")
    page = Page.model_validate({"id": "p", "title": "P", "groups": [
        {"name": "A", "monitors": ["api"]}, {"name": "B", "monitors": ["api", "ghost"]}]})
    with pytest.raises(PageError) as caught:
        await status_pages.upsert(pool, page, "api")
    assert caught.value.problems == [("groups.1.monitors.1.id", "no monitor 'ghost'")]
    assert await status_pages.get(pool, "p") is None


def test_a_group_lists_named_monitors_first_then_tagged_ones_each_once():
    page = Page.model_validate({"id": "p", "title": "P", "groups": [{
        "name": "G", "tags": ["web"], "latency": False,
        "monitors": ["zeta", {"id": "alpha", "latency": True, "name": "Alpha!"}, "gone"]}]})
    entries = page.groups[0].entries({"alpha": ["web"], "zeta": [], "beta": ["web"],
                                      "other": ["db"]})
    assert [(e.id, e.name, e.bar, e.latency) for e in entries] == [
        ("zeta", None, True, False), ("alpha", "Alpha!", True, True),
        ("beta", None, True, False)]


# --- the API ------------------------------------------------------------------------------------

PAGE = {"id": "public", "title": "Acme status", "description": "Our services",
        "groups": [{"name": "Web", "tags": ["web"]},
                   {"name": "Data", "monitors": ["db", {"id": "api", "latency": False}]}]}


async def test_a_page_is_created_read_replaced_and_deleted(api, pool, pages):
    await store_monitors(pool, SCHEMA.parse([tcp("api", tags=["web"]), tcp("db")]),
                         source="api")
    resp = await api.post("/api/v1/status-pages", json=PAGE)
    body = await resp.json()
    assert resp.status == 201, body
    assert (body["id"], body["title"], body["source"], body["version"]) == (
        "public", "Acme status", "api", 1)
    assert body["groups"][1]["monitors"][1] == {"id": "api", "name": None, "bar": None,
                                                "uptime": None, "latency": False}
    assert (await api.post("/api/v1/status-pages", json=PAGE)).status == 409
    listed = await (await api.get("/api/v1/status-pages")).json()
    assert [p["id"] for p in listed["status_pages"]] == ["public"]
    assert await (await api.get("/api/v1/status-pages/public")).json() == body
    same = await api.put("/api/v1/status-pages/public", json=PAGE)
    assert (same.status, (await same.json())["version"]) == (200, 1)
    changed = await api.put("/api/v1/status-pages/public", json={**PAGE, "title": "Acme"})
    assert (changed.status, (await changed.json())["version"]) == (200, 2)
    made = await api.put("/api/v1/status-pages/second", json={**PAGE, "id": "second"})
    assert made.status == 201
    assert (await api.delete("/api/v1/status-pages/public")).status == 204
    assert (await api.get("/api/v1/status-pages/public")).status == 404
    assert (await api.delete("/api/v1/status-pages/public")).status == 404


@pytest.mark.parametrize(("change", "field"), [
    ({"id": "Not A Slug"}, "id"),
    ({"title": ""}, "title"),
    ({"groups": []}, "groups"),
    ({"groups": [{"name": "G"}]}, "groups.0.monitors"),
    ({"groups": [{"name": "G", "monitors": [{"id": "api", "bar": "sometimes"}]}]},
     "groups.0.monitors.0.bar"),
    ({"groups": [{"name": "G", "monitors": ["api"], "colour": "red"}]}, "groups.0.colour"),
    ({"groups": [{"name": "G", "monitors": ["api", "db", "ghost"]}]}, "groups.0.monitors.2.id"),
    ({"title": "a\x00b"}, "title"),
])
async def test_a_bad_page_is_a_422_naming_the_field_and_nothing_is_written(
        api, pool, pages, change, field):
    await store_monitors(pool, SCHEMA.parse([tcp("api"), tcp("db")]), source="api")
    resp = await api.post("/api/v1/status-pages", json={**PAGE, **change})
    body = await resp.json()
    assert resp.status == 422, body
    assert body["error"] == "invalid status page"
    assert field in [e["field"] for e in body["errors"]], body
    assert await status_pages.list_all(pool) == []


async def test_reading_needs_read_and_changing_needs_write(r, pool, ch, pages):
    await pool.execute("TRUNCATE api_tokens")
    reader = await tokens.create(pool, "reader", "read")
    async with api_client(r, pool, ch) as anyone:
        assert (await anyone.get("/api/v1/status-pages")).status == 401
    async with api_client(r, pool, ch, token=reader) as c:
        assert (await c.get("/api/v1/status-pages")).status == 200
        assert (await c.post("/api/v1/status-pages", json=PAGE)).status == 403
        assert (await c.delete("/api/v1/status-pages/public")).status == 403


# --- vigil monitors apply -----------------------------------------------------------------------

def page_file(path, monitors: list[dict[str, Any]], pages: list[dict[str, Any]]):
    path.write_text(json.dumps({"monitors": monitors, "status_pages": pages}))
    return str(path)


async def stored_pages(pool) -> dict[str, tuple[str, int]]:
    return {r["id"]: (r["source"], r["version"]) for r in await status_pages.list_all(pool)}


async def test_apply_writes_pages_with_the_monitors_and_prunes_file_pages(
        tmp_path, pool, pages, capsys):
    await status_pages.upsert(pool, Page.model_validate(
        {"id": "from-api", "title": "API", "groups": [{"name": "G", "tags": ["x"]}]}), "api")
    wanted = [{"id": "main", "title": "Main", "groups": [{"name": "Web", "monitors": ["web"]}]},
              {"id": "extra", "title": "Extra", "groups": [{"name": "All", "tags": ["t"]}]}]
    file = page_file(tmp_path / "m.yaml", [tcp("web")], wanted)
    await admin.apply(pool, file, prune=True, dry_run=False)
    assert await stored_pages(pool) == {"main": ("file", 1), "extra": ("file", 1),
                                        "from-api": ("api", 1)}
    assert "status pages: 2 created, 0 updated, 0 unchanged, 0 deleted" in capsys.readouterr().out
    file = page_file(tmp_path / "m.yaml", [tcp("web")],
                     [{**wanted[0], "title": "Main status"}])
    await admin.apply(pool, file, prune=False, dry_run=True)
    assert "~ update status page main" in capsys.readouterr().out
    assert (await stored_pages(pool))["main"] == ("file", 1)
    await admin.apply(pool, file, prune=True, dry_run=False)
    out = capsys.readouterr().out
    assert "- delete status page extra" in out
    assert await stored_pages(pool) == {"main": ("file", 2), "from-api": ("api", 1)}
    assert await status_pages.shown_monitors(pool) == {"web"}


async def test_a_file_may_hold_only_status_pages(tmp_path, pool, pages):
    page_file(tmp_path / "monitors.yaml", [tcp("web")], [])
    (tmp_path / "pages.yaml").write_text(json.dumps({"status_pages": [
        {"id": "main", "title": "Main", "groups": [{"name": "Web", "monitors": ["web"]}]}]}))
    await admin.apply(pool, str(tmp_path), prune=True, dry_run=False)
    assert await stored_pages(pool) == {"main": ("file", 1)}


async def test_apply_names_an_unknown_monitor_and_writes_nothing(tmp_path, pool, pages):
    file = page_file(tmp_path / "m.yaml", [tcp("web")], [
        {"id": "main", "title": "Main", "groups": [{"name": "Web", "monitors": ["web", "gone"]}]}])
    with pytest.raises(admin.CommandError) as caught:
        await admin.apply(pool, file, prune=False, dry_run=False)
    assert str(caught.value) == (f"{file}: status page 'main': groups.0.monitors.1.id: "
                                 "no monitor 'gone'")
    # One transaction: the monitor written before the page failed is not kept either.
    assert await pool.fetch("SELECT id FROM monitors") == []
    assert await stored_pages(pool) == {}


async def test_apply_lists_every_bad_field_of_every_page(tmp_path, pool, pages):
    file = page_file(tmp_path / "m.yaml", [tcp("web")], [
        {"id": "main", "title": "", "groups": [{"name": "Web", "monitors": ["web"]}]},
        {"id": "Bad Id", "title": "T", "groups": [{"name": "G", "tags": ["t"]}]}])
    with pytest.raises(SpecError) as caught:
        await admin.apply(pool, file, prune=False, dry_run=False)
    assert caught.value.problems == [
        f"status page 'main' ({file}: status_pages[0]): title: String should have at least "
        "1 character",
        f"status page 'Bad Id' ({file}: status_pages[1]): id: String should match pattern "
        f"'{status_pages.PAGE_ID_PATTERN}'"]
    assert await pool.fetch("SELECT id FROM monitors") == []


# --- the rendered page ------------------------------------------------------------------------

SECRET = "refused by 10.0.0.7:5432 secret-banner"
DAY = 86_400_000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def noon(days_back: int, now_ms: int) -> int:
    today = now_ms - now_ms % DAY
    return today - days_back * DAY + DAY // 2


async def insert_results(ch, results) -> None:
    await ch.insert("check_results", [row(x) for x in results], COLUMNS)


async def project(pool, events) -> None:
    async with pool.acquire() as conn:
        await incidents.project(conn, events)


@pytest.fixture
async def shown(r, keys, pool, ch, postgres_dsn, pages):
    """Three monitors on page `acme`, their history in check_results, confirmed statuses,
    incidents with a note and a maintenance window; the expected figures."""
    await clear_projections(pool, ch)
    await pool.execute("TRUNCATE maintenance_windows")
    now = int(time.time() * 1000)
    await store_monitors(pool, SCHEMA.parse([
        tcp("pg-web", name="Web <front>", tags=["edge"]),
        tcp("pg-secret", name="Private"),
        tcp("pg-open", name="Open", public_details=True)]), source="api")
    results = []
    # Days back -> (up, down, in maintenance) checks of pg-web.
    days = {3: (199, 1, 0), 2: (3, 1, 0), 1: (4, 0, 0), 5: (0, 0, 2)}
    for back, (up, down, muted) in days.items():
        at = noon(back, now)
        outcomes = ["up"] * up + ["down"] * down
        results += [check_result("pg-web", at + i * 1_000, o, latency_ms=20.0)
                    for i, o in enumerate(outcomes)]
        results += [check_result("pg-web", at + (i + 500) * 1_000, "up", maintenance=True)
                    for i in range(muted)]
    results.append(check_result("pg-web", now - 600_000, "up", latency_ms=30.0))
    results.append(check_result("pg-secret", now - 600_000, "down", error_kind="refused",
                                error=SECRET))
    results.append(check_result("pg-open", now - 600_000, "down", error_kind="status",
                                error="status 500: <b>boom</b>", status_code=500))
    await insert_results(ch, results)
    sink = StatusSink(r, keys, Settings(instance_id="sink-page"), postgres_dsn=postgres_dsn)
    await sink.start()
    try:
        await sink.write([x for x in results if x.scheduled_ms == now - 600_000])
    finally:
        await sink.close()
    await project(pool, [
        change("pg-web", now - 3_600_000, "up"), change("pg-secret", now - 600_000, "down"),
        change("pg-open", now - 600_000, "down"),
        opened("pg-secret", now - 600_000, error_kind="refused", error=SECRET),
        opened("pg-web", noon(2, now), error_kind="refused", error="web gone"),
        resolved("pg-web", noon(2, now), noon(2, now) + 60_000)])
    assert await incidents.add_note(pool, f"pg-web:{noon(2, now)}", "ops",
                                    "Fixed the <proxy> & restarted")
    await maintenance_store.upsert(pool, Window.model_validate({
        "id": "db-upgrade", "name": "DB <upgrade>", "monitors": ["pg-web"],
        "start": iso(now - 60_000), "end": iso(now + 3_600_000)}), "api")
    await status_pages.upsert(pool, Page.model_validate({
        "id": "acme", "title": "Acme <status>", "description": "All of it & more",
        "groups": [{"name": "Front", "tags": ["edge"]},
                   {"name": "Back", "monitors": ["pg-secret", {"id": "pg-open", "bar": False}]}]}),
        "api")
    answered = [x for x in results if x.monitor_id == "pg-web" and not x.maintenance]
    day_ago = [x for x in answered if x.scheduled_ms >= now - DAY]
    return {"now": now, "days": days,
            "90 d": sum(x.outcome == "up" for x in answered) / len(answered),
            "24 h": sum(x.outcome == "up" for x in day_ago) / len(day_ago)}


def monitor_html(page: str, monitor_id: str) -> str:
    start = page.index(f'data-monitor="{monitor_id}"')
    return page[start:page.index("</li>", start)]


def bar_of(page: str, monitor_id: str) -> list[tuple[str, str]]:
    """(class, title) of each day of a monitor's bar, oldest first."""
    return re.findall(r'<i class="([^"]+)" title="([^"]+)"></i>', monitor_html(page, monitor_id))


async def test_the_page_shows_what_was_written_and_no_private_detail(client, shown):
    resp = await client.get("/status/acme")
    page = await resp.text()
    assert (resp.status, resp.content_type, resp.headers["Content-Encoding"]) == (
        200, "text/html", "gzip")
    plain = await client.get("/status/acme", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert await plain.text() == page
    assert "<title>Acme &lt;status&gt;</title>" in page
    assert "All of it &amp; more" in page
    assert "Web &lt;front&gt;" in page
    today = datetime.fromtimestamp(shown["now"] / 1000, UTC).date()
    days = bar_of(page, "pg-web")
    assert len(days) == 90
    by_day = {title.split(":")[0]: (shade, title) for shade, title in days}
    expect = {3: ("u3", "99.50% up"), 2: ("u1", "75.00% up"), 1: ("u4", "100.00% up"),
              5: ("u0 mt", "no data, maintenance"), 10: ("u0", "no data")}
    for back, (shade, said) in expect.items():
        day = (today - timedelta(days=back)).isoformat()
        assert by_day[day] == (shade, f"{day}: {said}"), back
    assert days[-1][1].startswith(f"{today.isoformat()}: ")
    assert f"<dt>90 d</dt><dd>{100 * shown['90 d']:.2f}%</dd>" in page
    assert f"<dt>24 h</dt><dd>{100 * shown['24 h']:.2f}%</dd>" in page
    assert "<svg class=chart" in monitor_html(page, "pg-web")
    assert "No response times in the last 24 h" in monitor_html(page, "pg-secret")
    # Confirmed statuses, the open incident's banner, the history with its note, escaped.
    assert 'data-monitor="pg-secret" data-status="down"' in page
    assert 'data-monitor="pg-web" data-status="up"' in page
    assert "Some systems are down" in page
    banner = page[page.index("id=banner"):page.index("</section>", page.index("id=banner"))]
    assert "Private" in banner
    assert "Web" not in banner
    assert "Fixed the &lt;proxy&gt; &amp; restarted" in page
    assert "DB &lt;upgrade&gt;" in page
    assert "In progress" in page
    # The private monitor's probe text is nowhere (nor its incident's); its class is.
    assert SECRET not in page
    assert "web gone" not in page
    assert "refused" in page
    # A monitor with public_details shows its text, escaped; its bar is off.
    assert "status: status 500: &lt;b&gt;boom&lt;/b&gt;" in page
    assert "<b>boom" not in page
    assert "class=bar" not in monitor_html(page, "pg-open")
    # Its own script and stylesheet only; no inline script, no refresh.
    assert "<script src=/static/status-page.js defer></script>" in page
    assert page.count("<script") == 1
    assert "http-equiv=refresh" not in page


# --- live updates -------------------------------------------------------------------------------

async def next_frame(resp, wanted: str) -> dict[str, Any]:
    """The data of the next frame of type `wanted`, the others skipped."""
    async with asyncio.timeout(10):
        kind = None
        while True:
            line = (await resp.content.readline()).decode()
            if line.startswith("event: "):
                kind = line[7:].strip()
            elif line.startswith("data: ") and kind == wanted:
                data: dict[str, Any] = json.loads(line[6:])
                return data


async def test_the_page_stream_sends_its_monitors_changes_with_public_fields_only(
        client, r, keys, shown):
    resp = await client.get("/status/acme/events")
    assert (resp.status, resp.content_type) == (200, "text/event-stream")
    assert await resp.content.readline() == b"retry: 3000\n"
    assert await resp.content.readline() == b": connected\n"
    now = shown["now"]
    await publish(r, keys, [
        change("not-on-page", now, "down", "up"),
        b"not an event",
        change("pg-web", now, "down", "up", regions={"eu": "down"}),
        opened("pg-web", now, error_kind="refused", error=SECRET)])
    assert await next_frame(resp, "status") == {"monitor_id": "pg-web", "status": "down",
                                                "since_ms": now}
    assert await next_frame(resp, "incident") == {
        "monitor_id": "pg-web", "incident_id": f"pg-web:{now}", "state": "opened",
        "opened_ms": now, "resolved_ms": None}
    resp.close()
    assert (await client.get("/status/nope/events")).status == 404


async def test_one_subscriber_hears_every_shards_events(r):
    """A page's monitors live in several shards: the reader follows each shard's stream."""
    live = Live(r, [Keys("0").events, Keys("1").events])
    try:
        sub = await live.subscribe(frozenset({"a", "b"}), lambda: None)
        assert sub is not None
        await publish(r, Keys("1"), [change("b", 5_000, "down", "up")])
        await publish(r, Keys("0"), [change("a", 6_000, "down", "up")])
        async with asyncio.timeout(10):
            frames = {await sub.queue.get(), await sub.queue.get()}
        assert {json.loads(f.split(b"data: ")[1])["monitor_id"] for f in frames
                if f is not None} == {"a", "b"}
    finally:
        await live.close()


async def test_a_client_too_far_behind_is_dropped(r, keys):
    aborted = asyncio.Event()
    live = Live(r, [keys.events])
    try:
        slow = await live.subscribe(frozenset({"m"}), aborted.set)
        other = await live.subscribe(frozenset({"else"}), lambda: None)
        assert slow is not None
        assert other is not None
        await publish(r, keys, [change("m", at, "up") for at in range(QUEUE_MAX + 1)])
        async with asyncio.timeout(10):
            await aborted.wait()
        assert live.subscribers == {other}
        assert await slow.queue.get() is None  # its stream ends: what it missed is dropped
    finally:
        await live.close()


async def test_a_redis_outage_is_one_warning_and_the_stream_goes_on(tmp_path, keys):
    server = RedisServer(tmp_path, port=free_port())
    server.start()
    r = redis_client(server.url)
    live = Live(r, [keys.events])
    try:
        with capture_logs() as logs:
            sub = await live.subscribe(frozenset({"m"}), lambda: None)
            assert sub is not None
            server.stop()

            async def warned() -> bool:
                return any(e["event"].startswith("events stream unreachable") for e in logs)

            await wait_for(warned)
            server.start()  # the same port, no data: the stream starts again from nothing

            async def published() -> bool:
                try:
                    await publish(r, keys, [change("m", 5_000, "down", "up")])
                except RedisError:
                    return False
                return True

            await wait_for(published)
            async with asyncio.timeout(10):
                data = await sub.queue.get()
        assert data is not None
        assert b'"monitor_id":"m","status":"down"' in data
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
            "events stream unreachable; live pages wait and retry"]
    finally:
        await live.close()
        await r.aclose()
        server.stop()


async def test_the_root_is_the_default_page_else_a_list_else_how_to_make_one(client, pool,
                                                                             pages):
    empty = await (await client.get("/")).text()
    assert "No status page yet" in empty
    assert "status_pages:" in empty
    await status_pages.upsert(pool, Page.model_validate(
        {"id": "ops", "title": "Ops <team>", "groups": [{"name": "G", "tags": ["x"]}]}), "api")
    listed = await (await client.get("/")).text()
    assert "<a href='/status/ops'>Ops &lt;team&gt;</a>" in listed
    await status_pages.upsert(pool, Page.model_validate(
        {"id": "default", "title": "Main", "groups": [{"name": "G", "tags": ["x"]}]}), "api")
    assert "<title>Main</title>" in await (await client.get("/")).text()
    missing = await client.get("/status/none-such")
    assert (missing.status, (await missing.json())["error"]) == (
        404, "no status page 'none-such'")


async def test_streams_past_the_cap_are_refused(client, pool, pages, monkeypatch):
    monkeypatch.setattr(live_module, "STREAMS_MAX", 1)
    await status_pages.upsert(pool, Page.model_validate(
        {"id": "capped", "title": "C", "groups": [{"name": "G", "tags": ["x"]}]}), "api")
    first = await client.get("/status/capped/events")
    assert await first.content.readline() == b"retry: 3000\n"
    second = await client.get("/status/capped/events")
    assert second.status == 503
    assert "too many live streams" in (await second.json())["error"]
    first.close()
