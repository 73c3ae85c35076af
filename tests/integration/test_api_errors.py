"""Every API error is JSON built by one helper: user input with quotes in a path or a query
stays valid JSON, and aiohttp's own errors (no route, wrong method, body too large) too."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api import tokens
from api.app import CLIENT_MAX_SIZE, make_app
from engine.keys import Keys
from executors.kinds import SCHEMA


@pytest.fixture
async def api(r, pool, ch, clean) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(make_app(r, pool, ch, Keys(), SCHEMA))) as c:
        yield c


@pytest.mark.parametrize(("path", "status", "error"), [
    ('/api/v1/monitors/x"y/uptime', 404, 'no monitor x"y'),
    ('/api/v1/monitors/x\\y/uptime', 404, "no monitor x\\y"),
    ('/api/v1/monitors/web/uptime?window=1"h', 422, "window: '1\"h' is not a duration"),
    ("/api/v1/monitors/web/uptime?window=401d", 422, "window: must be between"),
    ("/api/v1/push/not-a-token", 404, "not found"),
    ('/api/v1/push/aaaaaaaaaaaaaaaaaaaa?status=up"', 422, "invalid heartbeat"),
    ("/api/v1/monitors", 401, "send Authorization"),
    ("/no/such/route", 404, "Not Found"),
])
async def test_errors_are_valid_json(api: TestClient, path: str, status: int, error: str):
    resp = await api.get(path)
    assert (resp.status, resp.content_type) == (status, "application/json")
    assert (await resp.json())["error"].startswith(error)


async def test_aiohttp_errors_are_json_and_keep_their_headers(api: TestClient, pool):
    resp = await api.delete("/api/v1/status")
    assert (resp.status, resp.content_type) == (405, "application/json")
    assert "GET" in resp.headers["Allow"]
    assert (await resp.json()) == {"error": "Method Not Allowed"}
    token = await tokens.create(pool, "errors-test", "write")
    resp = await api.post("/api/v1/monitors", data=b"x" * (CLIENT_MAX_SIZE + 1),
                          headers={"Authorization": f"Bearer {token}"})
    assert (resp.status, resp.content_type) == (413, "application/json")
    assert (await resp.json()) == {"error": "Request Entity Too Large"}


async def test_an_oversized_push_body_is_a_json_413(api: TestClient):
    resp = await api.post("/api/v1/push/aaaaaaaaaaaaaaaaaaaa", data=b"x" * (64 * 1024),
                          headers={"Content-Type": "text/plain"})
    assert (resp.status, resp.content_type) == (413, "application/json")
    assert (await resp.json())["error"].startswith("body over")
