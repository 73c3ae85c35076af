"""The http kind's secrets (issue 9.6): basic auth, bearer token and credential headers are
redacted by the real API, sealed in Postgres and in the check.due events, and the real
executor still authenticates to a target that checks them."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web

from engine.secrets import PREFIX, REDACTED
from engine.settings import Settings
from tests.support.kind_executor import check_due, run_checks
from tests.support.servers import create_monitors, serve_app

PASSWORD = "pw-5ecret-basic"
TOKEN = "tok-5ecret-bearer"
API_KEY = "key-5ecret-header"
PLAIN = (PASSWORD, TOKEN, API_KEY)
SETTINGS = Settings(instance_id="exec-secrets-http")


@pytest.fixture
async def guarded() -> AsyncIterator[str]:
    """A target that answers 200 only to the right credentials, 401 otherwise."""
    wanted = {"basic": ("Basic " + base64.b64encode(f"u:{PASSWORD}".encode()).decode(), None),
              "bearer": (f"Bearer {TOKEN}", API_KEY)}

    async def check(request: web.Request) -> web.Response:
        authorization, api_key = wanted[request.match_info["how"]]
        ok = (request.headers.get("Authorization"), request.headers.get("X-Api-Key")) == (
            authorization, api_key)
        return web.Response(status=200 if ok else 401)

    app = web.Application()
    app.router.add_get("/{how}", check)
    async with serve_app(app) as url:
        yield url


def monitors(url: str) -> list[dict]:
    return [
        {"id": "basic", "kind": "http",
         "http": {"url": f"{url}/basic", "username": "u", "password": PASSWORD}},
        {"id": "bearer", "kind": "http",
         "http": {"url": f"{url}/bearer", "bearer_token": TOKEN,
                  "headers": {"X-Api-Key": API_KEY, "Accept": "text/plain"}}},
    ]


async def test_http_credentials_are_redacted_sealed_and_still_sent(api, r, keys, pool, guarded):
    await create_monitors(api, monitors(guarded), PLAIN)
    basic = await (await api.get("/api/v1/monitors/basic")).json()
    bearer = await (await api.get("/api/v1/monitors/bearer")).json()
    assert basic["http"]["password"] == REDACTED
    assert bearer["http"]["bearer_token"] == REDACTED
    assert bearer["http"]["headers"] == {"X-Api-Key": REDACTED, "Accept": "text/plain"}
    rows = await pool.fetch("SELECT id, spec::text AS spec FROM monitors")
    assert not any(p in row["spec"] for row in rows for p in PLAIN)
    assert all(PREFIX in row["spec"] for row in rows)
    got = await run_checks(r, keys, [check_due(row["id"], "http", orjson.loads(row["spec"]))
                                     for row in rows], SETTINGS)
    assert {m: (res.outcome, res.status_code) for m, res in got.items()} == {
        "basic": ("up", 200), "bearer": ("up", 200)}


async def test_a_header_sent_back_redacted_keeps_its_value(api, pool, guarded):
    bearer = monitors(guarded)[1]
    assert (await api.post("/api/v1/monitors", json=bearer)).status == 201
    before = await pool.fetchval("SELECT spec::text FROM monitors")
    shown = await (await api.get("/api/v1/monitors/bearer")).json()
    resp = await api.put("/api/v1/monitors/bearer", json={
        "id": "bearer", "kind": "http", "http": shown["http"]})
    assert resp.status == 200, await resp.text()
    assert await pool.fetchval("SELECT spec::text FROM monitors") == before
