"""HTTP hygiene (issue 9 item 8), against the real app: security headers on the status page,
`nosniff` on every answer, `WWW-Authenticate` on every 401, and JSON error bodies for aiohttp's
own errors (404, 405, 413) and for a bug (500)."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from api import tokens
from api.app import CLIENT_MAX_SIZE
from api.errors import json_errors
from api.headers import secure
from engine import status_pages
from engine.status_pages import Page
from tests.support.servers import api_client

# What each path parameter is filled with when every route is tried.
PARAMETERS = {"monitor_id": "web", "token": "A" * 32, "window_id": "nightly",
              "incident_id": "web:1000", "channel_id": "ops", "page_id": "no-such-page",
              "entry_id": "1-0", "tag": "web"}


async def test_the_status_page_sends_its_security_headers(client, pool):
    await pool.execute("TRUNCATE status_pages")
    await status_pages.upsert(pool, Page.model_validate(
        {"id": "default", "title": "Status", "groups": [{"name": "All", "tags": ["web"]}]}),
        "api")
    resp = await client.get("/")
    page = await resp.text()
    policy = dict(part.strip().split(" ", 1)
                  for part in resp.headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'none'"
    # Scripts and styles from the page's own files only, nothing inline; the live updates
    # connect to the page's own origin.
    assert (policy["script-src"], policy["style-src"], policy["connect-src"]) == (
        "'self'", "'self'", "'self'")
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in resp.headers["Content-Security-Policy"]
    assert (resp.headers["X-Frame-Options"], resp.headers["X-Content-Type-Options"],
            resp.headers["Referrer-Policy"]) == ("DENY", "nosniff", "no-referrer")
    # The page needs nothing the policy refuses: its stylesheet and script are files.
    assert "<style" not in page
    assert " style=" not in page
    assert page.count("<script") == page.count("<script src=/static/") == 1
    for path, media in (("/static/status-page.css", "text/css"),
                        ("/static/status-page.js", "text/javascript")):
        asset = await client.get(path)
        assert (asset.status, asset.content_type, asset.headers["X-Content-Type-Options"]) == (
            200, media, "nosniff")
    await pool.execute("TRUNCATE status_pages")


def _paths(app: web.Application) -> list[tuple[str, str]]:
    out = []
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method == "HEAD":
            continue
        out.append((route.method, resource.canonical.format_map(PARAMETERS)))
    return out


async def test_every_answer_is_nosniff_and_every_401_a_bearer_challenge(client, r, pool, ch):
    asked = []
    for method, path in _paths(client.app):
        for headers in ({}, {"Authorization": "Bearer vigil_wrong"},
                        {"Authorization": "Basic dTpw"}):
            # A fresh app each time: failed attempts add up to a 429 within one app.
            async with api_client(r, pool, ch) as fresh:
                resp = await fresh.request(method, path, headers=headers)
                await resp.read()
            assert resp.headers["X-Content-Type-Options"] == "nosniff", (method, path)
            if resp.status == 401:
                assert resp.headers["WWW-Authenticate"].startswith('Bearer realm="vigil"'), (
                    method, path, headers)
                assert "error" in await resp.json()
                asked.append((method, path, headers.get("Authorization", "")[:6]))
    # Every route of the monitors, maintenance, incidents, channels, deliveries, status pages,
    # operations and SLA APIs asks for a token, and nothing else does; a wrong token is refused
    # on /api/v1/status as well.
    monitors = [(m, p) for m, p in _paths(client.app)
                if p.startswith(("/api/v1/monitors", "/api/v1/maintenance", "/api/v1/incidents",
                                 "/api/v1/channels", "/api/v1/deliveries",
                                 "/api/v1/status-pages", "/api/v1/queue", "/api/v1/sla"))
                and not p.endswith("/uptime")]
    assert sorted(asked) == sorted([(m, p, kind) for m, p in monitors
                                    for kind in ("", "Bearer", "Basic ")]
                                   + [("GET", "/api/v1/status", kind)
                                      for kind in ("Bearer", "Basic ")])


async def test_aiohttps_own_errors_are_json(client, pool):
    missing = await client.get("/no/such/route")
    assert (missing.status, missing.content_type) == (404, "application/json")
    assert await missing.json() == {"error": "Not Found"}
    wrong = await client.delete("/api/v1/status")
    assert (wrong.status, wrong.content_type) == (405, "application/json")
    assert "GET" in wrong.headers["Allow"]
    token = await tokens.create(pool, "hygiene", "write")
    big = await client.post("/api/v1/monitors", data=b"x" * (CLIENT_MAX_SIZE + 1),
                            headers={"Authorization": f"Bearer {token}"})
    assert (big.status, big.content_type) == (413, "application/json")
    assert await big.json() == {"error": "Request Entity Too Large"}
    for resp in (missing, wrong, big):
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


@pytest.fixture
async def buggy() -> TestClient:
    async def bug(_: web.Request) -> web.Response:
        raise RuntimeError("password=hunter2")  # a bug whose message holds a secret

    app = web.Application(middlewares=[json_errors])
    app.on_response_prepare.append(secure)
    app.router.add_get("/bug", bug)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_a_bug_is_a_json_500_that_says_nothing_of_it(buggy):
    with capture_logs() as logs:
        resp = await buggy.get("/bug")
    assert (resp.status, resp.content_type) == (500, "application/json")
    assert await resp.json() == {"error": "internal error"}
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    [logged] = [e for e in logs if e["event"] == "request failed"]
    assert (logged["log_level"], logged["route"]) == ("error", "/bug")
