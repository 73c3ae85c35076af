"""Managing monitors through the API, on real Postgres and Redis, with a running scheduler."""

from __future__ import annotations

import orjson
import pytest

from api import tokens
from engine import store
from engine.clock import redis_ms
from engine.events import CheckDue
from engine.streams import event_of
from executors.kinds import SCHEMA
from scheduler.dispatch import Dispatcher
from scheduler.service import Scheduler
from scheduler.sync import CHANNEL
from tests.support.helpers import put_plan, running, store_monitors, wait_for
from vigil import admin

WEB = {"id": "web", "kind": "http", "interval": "1s", "timeout": "500ms", "tags": ["shop"],
       "http": {"url": "http://127.0.0.1:9/a"}}


async def test_writes_and_definitions_need_a_token(api, pool):
    bare = {"Authorization": ""}
    assert (await api.get("/api/v1/monitors", headers=bare)).status == 401
    assert (await api.post("/api/v1/monitors", json=WEB, headers=bare)).status == 401
    wrong = {"Authorization": "Bearer vigil_nope"}
    resp = await api.post("/api/v1/monitors", json=WEB, headers=wrong)
    assert resp.status == 401
    assert "token" in (await resp.json())["error"]
    assert await pool.fetchval("SELECT count(*) FROM monitors") == 0
    await tokens.revoke(pool, "test")
    other = await tokens.create(pool, "other", "read")
    assert (await api.get("/api/v1/monitors",
                          headers={"Authorization": f"Bearer {other}"})).status == 200
    stored = await pool.fetch("SELECT token_sha256 FROM api_tokens")
    assert all(other not in r["token_sha256"] for r in stored)


async def test_create_read_replace_patch_delete(api, pool):
    resp = await api.post("/api/v1/monitors", json=WEB)
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert (body["id"], body["source"], body["version"], body["interval_ms"]) == (
        "web", "api", 1, 1000)
    assert body["http"]["url"] == "http://127.0.0.1:9/a"
    assert (await api.post("/api/v1/monitors", json=WEB)).status == 409

    listed = await (await api.get("/api/v1/monitors", params={"tag": "shop"})).json()
    assert [m["id"] for m in listed["monitors"]] == ["web"]
    assert (await api.get("/api/v1/monitors", params={"tag": "none"})).status == 200
    assert (await api.get("/api/v1/monitors/nope")).status == 404

    resp = await api.patch("/api/v1/monitors/web", json={"interval": "2s", "tags": None})
    body = await resp.json()
    assert resp.status == 200, body
    assert (body["interval_ms"], body["tags"], body["version"]) == (2000, [], 2)
    assert body["http"]["url"] == "http://127.0.0.1:9/a"

    replaced = {"kind": "tcp", "interval": "5s", "tcp": {"host": "127.0.0.1", "port": 9}}
    resp = await api.put("/api/v1/monitors/web", json=replaced)
    assert resp.status == 200
    body = await resp.json()
    assert (body["kind"], body["version"], "http" in body) == ("tcp", 3, False)
    resp = await api.put("/api/v1/monitors/db", json={**replaced, "id": "db"})
    assert resp.status == 201

    assert (await (await api.post("/api/v1/monitors/web/pause")).json())["enabled"] is False
    assert (await (await api.post("/api/v1/monitors/web/resume")).json())["enabled"] is True
    assert (await api.post("/api/v1/monitors/nope/pause")).status == 404
    assert (await api.delete("/api/v1/monitors/web")).status == 204
    assert (await api.delete("/api/v1/monitors/web")).status == 404
    assert [r["id"] for r in await pool.fetch("SELECT id FROM monitors")] == ["db"]


async def test_validation_errors_name_every_field(api, pool):
    bad = {"id": "bad id", "kind": "http", "interval": "1s", "timeout": "2s",
           "http": {"url": "nowhere", "method": "FETCH"}}
    resp = await api.post("/api/v1/monitors", json=bad)
    assert resp.status == 422
    fields = {e["field"] for e in (await resp.json())["errors"]}
    assert {"id", "timeout_ms", "http.url", "http.method"} <= fields
    assert (await api.post("/api/v1/monitors", data=b"{nope")).status == 400
    resp = await api.put("/api/v1/monitors/a", json={**WEB, "id": "b"})
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == "id"
    resp = await api.post("/api/v1/monitors", json={**WEB, "interval": "500ms",
                                                    "timeout": "100ms"})
    assert (await resp.json())["errors"][0]["field"] == "interval_ms"
    assert await pool.fetchval("SELECT count(*) FROM monitors") == 0


@pytest.mark.timeout(60)
async def test_a_change_reaches_the_next_dispatched_check(api, r, keys, pool, postgres_dsn):
    stream = keys.checks("default")
    async with running(Scheduler(r, pool, keys, reconcile_s=3600, postgres_dsn=postgres_dsn,
                  claim_idle_ms=35_000)):
        # The scheduler's LISTEN is in place: every change from here on reaches it as a
        # notification (the reconcile that would catch a missed one runs once an hour).
        async def listening() -> bool:
            return bool(await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query = $1", f'LISTEN "{CHANNEL}"'))

        await wait_for(listening, timeout=5)
        assert (await api.post("/api/v1/monitors", json=WEB)).status == 201

        async def dispatched() -> bool:
            return await r.xlen(stream) > 0

        await wait_for(dispatched, timeout=3)
        resp = await api.patch("/api/v1/monitors/web",
                               json={"http": {"url": "http://127.0.0.1:9/b"}})
        assert resp.status == 200

        async def planned() -> bool:
            plan = await r.hget(keys.plan, "web")
            return b"/b" in plan

        await wait_for(planned, timeout=2, every=0.01)
        last = (await r.xrevrange(stream, count=1))[0][0]

        async def next_carries_it() -> bool:
            return len(await r.xrange(stream, min=f"({last.decode()}")) > 0

        await wait_for(next_carries_it, timeout=3)
        [(_, fields)] = (await r.xrange(stream, min=f"({last.decode()}"))[:1]
        event = CheckDue.from_json(event_of(fields))
        assert (event.kind, event.spec["url"]) == ("http", "http://127.0.0.1:9/b")
        assert event.spec_version == 2
        assert (await api.post("/api/v1/monitors/web/pause")).status == 200

        async def unscheduled() -> bool:
            return await r.hget(keys.plan, "web") is None

        await wait_for(unscheduled, timeout=2, every=0.01)


async def test_a_revoked_token_fails_on_the_next_request(api, pool):
    assert (await api.get("/api/v1/monitors")).status == 200  # the token is known, and used
    await tokens.revoke(pool, "test-writer")
    resp = await api.get("/api/v1/monitors")
    assert (resp.status, (await resp.json())["error"]) == (401, "unknown or revoked token")


async def test_a_critical_monitor_through_the_api(api, r, keys, pool):
    """`critical` is a top-level field of the definition, kept across a PATCH, and stored in
    the spec, so the check.due events carry it to the executors (executors.admission)."""
    resp = await api.post("/api/v1/monitors", json={**WEB, "critical": True})
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert (body["critical"], "critical" in body["http"]) == (True, False)
    resp = await api.patch("/api/v1/monitors/web", json={"name": "Shop"})
    assert (resp.status, (await resp.json())["critical"]) == (200, True)
    [row] = await store.plan_rows(pool, ["web"])
    await put_plan(r, keys, row, "web")
    await r.zadd(keys.due, {"web": await redis_ms(r) - 1})
    assert (await Dispatcher(r, keys).dispatch())[0] == 1
    [(_, fields)] = await r.xrange(keys.checks("default"))
    spec = CheckDue.from_json(event_of(fields)).spec
    assert (spec["url"], spec["critical"]) == ("http://127.0.0.1:9/a", True)
    resp = await api.patch("/api/v1/monitors/web", json={"critical": False})
    body = await resp.json()
    assert ("critical" in body, body["version"]) == (False, 3)  # a definition without it
    assert "critical" not in orjson.loads(await pool.fetchval("SELECT spec::text FROM monitors"))


async def _walk(api, url: str) -> list[list[str]]:
    """The ids of every page from `url` on, by each page's `next`."""
    pages: list[list[str]] = []
    while url:
        resp = await api.get(url)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        pages.append([m["id"] for m in body["monitors"]])
        url = body["next"]
    return pages


async def test_the_listing_pages_by_id_to_the_last_monitor(api, pool):
    """Keyset pages (issue 12): each monitor once, in id order, whatever order they were
    written in; `next` is null on the last page, also when it is full."""
    ids = [f"m{n:02d}" for n in (5, 0, 3, 6, 1, 4, 2)]
    await store_monitors(pool, SCHEMA.parse([{**WEB, "id": i} for i in ids]), "api")
    assert await _walk(api, "/api/v1/monitors?limit=3") == [
        ["m00", "m01", "m02"], ["m03", "m04", "m05"], ["m06"]]
    assert await _walk(api, "/api/v1/monitors?limit=7") == [sorted(ids)]
    assert await _walk(api, "/api/v1/monitors") == [sorted(ids)]  # the default page holds them
    assert await _walk(api, "/api/v1/monitors?after=m04") == [["m05", "m06"]]


async def test_the_tag_filter_holds_on_every_page(api, pool):
    tagged = [{**WEB, "id": f"m{n:02d}", "tags": ["shop"] if n % 3 else ["blog"]}
              for n in range(10)]
    await store_monitors(pool, SCHEMA.parse(tagged), "api")
    pages = await _walk(api, "/api/v1/monitors?tag=shop&limit=2")
    assert pages == [["m01", "m02"], ["m04", "m05"], ["m07", "m08"]]
    assert await _walk(api, "/api/v1/monitors?limit=3&tag=blog") == [["m00", "m03", "m06"],
                                                                      ["m09"]]


@pytest.mark.parametrize(("query", "field"), [
    ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=ten", "limit"), ("limit=", "limit"),
    ("limit=-1", "limit"), ("after=no%20such%20id", "after"), ("after=-x", "after")])
async def test_a_bad_page_query_is_a_422_naming_it(api, query, field):
    resp = await api.get(f"/api/v1/monitors?{query}")
    assert resp.status == 422
    [error] = (await resp.json())["errors"]
    assert error["field"] == field


async def test_vigil_monitors_list_prints_every_page(pool, clean, capsys, monkeypatch):
    """`vigil monitors list` reads Postgres a page at a time (store.page): every monitor is
    printed once, in id order, across pages, and the tag filter holds on each."""
    monkeypatch.setattr(admin, "LIST_PAGE", 2)
    monitors = [{**WEB, "id": f"m{n}", "tags": ["shop"] if n % 2 else []} for n in range(5)]
    await store_monitors(pool, SCHEMA.parse(monitors), "api")
    await admin.list_monitors(pool, None)
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert listed == ["m0", "m1", "m2", "m3", "m4"]
    await admin.list_monitors(pool, "shop")
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == ["m1", "m3"]
