"""HTTP(S) checks against real servers on 127.0.0.1: every spec feature on an aiohttp app,
response-parsing edge cases and hostile targets on raw asyncio servers (tests/support/hostile.py),
TLS with trustme certificates, the real executor's timeout, and uvloop. The spec and the plan
alone: tests/unit/test_kind_http_spec.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
import uvloop
from aiohttp import web

from engine.events import Observation
from engine.keys import Keys
from engine.resolver import Resolver
from engine.settings import Settings
from executors.base import Context
from executors.kinds import http
from executors.kinds.http.spec import HttpSpec
from tests.support.helpers import free_port, wait_for
from tests.support.hostile import (
    Certs,
    RawServer,
    answer,
    blurt,
    cut_off,
    drip,
    endless_body,
    make_certs,
    silent,
)
from tests.support.kind_executor import check_due, run_checks
from tests.support.servers import serve_app

pytestmark = pytest.mark.timeout(60)

DUE = check_due("m", "http", {}, scheduled_ms=0, interval_ms=60_000)
GIB = 1024**3
SLOW_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


# --- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def new_context(certs: Certs) -> Context:
    ctx = Context(aioredis.Redis(), Keys("0"))
    certs.ca.configure_trust(ctx.tls_verify)
    return ctx


@pytest.fixture
async def ctx(certs: Certs) -> AsyncIterator[Context]:
    context = new_context(certs)
    yield context
    context.resolver.close()
    await context.redis.aclose()


async def ok(_: web.Request) -> web.Response:
    return web.Response(text="all good: ok")


async def echo(request: web.Request) -> web.Response:
    return web.json_response({
        "method": request.method, "path": request.path_qs, "body": await request.text(),
        "auth": request.headers.get("Authorization"), "test": request.headers.get("X-Test"),
        "agent": request.headers.get("User-Agent"),
        "encoding": request.headers.get("Accept-Encoding")})


async def status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    return web.Response(status=code, headers={"Location": "/ok"} if 300 <= code < 400 else {})


async def redirect(request: web.Request) -> web.Response:
    left = int(request.match_info["n"])
    raise web.HTTPFound(f"/redirect/{left - 1}" if left else "/ok")


async def loop_redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/loop/b" if request.match_info["side"] == "a" else "/loop/a")


async def see_other(request: web.Request) -> web.Response:
    raise web.HTTPSeeOther("echo")  # relative to /see-other


async def elsewhere(request: web.Request) -> web.Response:
    # Same server, another origin: 127.0.0.1 -> localhost.
    raise web.HTTPFound(f"http://localhost:{request.url.port}/echo")


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(int(request.match_info["ms"]) / 1000)
    return web.Response(text="late")


async def health(_: web.Request) -> web.Response:
    return web.json_response({
        "status": "ok", "count": 2, "ready": True, "none": None,
        "services": [{"name": "db", "status": "ok"}, {"name": "cache", "status": "ok"}],
        "mixed": [{"status": "ok"}, {"status": "warn"}]})


async def big(_: web.Request) -> web.Response:
    return web.Response(body=b"a" * (100 * 1024) + b"needle")


async def chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for part in (b"first ", b"second ", b"third"):
        await resp.write(part)
    await resp.write_eof()
    return resp


async def versioned(_: web.Request) -> web.Response:
    return web.Response(text="v", headers={"X-Version": "1.2.3",
                                           "Content-Type": "text/plain; charset=utf-8"})


@pytest.fixture(scope="module")
async def site() -> AsyncIterator[str]:
    """A well-behaved site exercising each feature."""
    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/redirect/{n}", redirect)
    app.router.add_get("/loop/{side}", loop_redirect)
    app.router.add_post("/see-other", see_other)
    app.router.add_get("/elsewhere", elsewhere)
    app.router.add_get("/slow/{ms}", slow)
    app.router.add_get("/health", health)
    app.router.add_get("/big", big)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/versioned", versioned)
    async with serve_app(app) as url:
        yield url


async def observe(ctx: Context, spec: dict[str, Any], timeout_s: float = 5.0) -> Observation:
    """Run a check as the executor does: the spec parsed and prepared, under the monitor's
    timeout."""
    plan = http.KIND.prepare(HttpSpec.model_validate(spec))
    try:
        async with asyncio.timeout(timeout_s):
            return await http.check(plan, ctx, DUE)
    except TimeoutError:
        return Observation(outcome="down", error_kind="timeout", latency_ms=timeout_s * 1000)


async def beside_healthy(ctx: Context, site: str, hostile: Awaitable[Observation]
                         ) -> tuple[Observation, list[str]]:
    """Run a hostile check and a healthy one together: the hostile result, and the order they
    finished in (a hostile target that is slow on purpose must not hold the healthy one up)."""
    finished: list[str] = []

    async def run(name: str, check: Awaitable[Observation]) -> Observation:
        obs = await check
        finished.append(name)
        return obs

    obs, fine = await asyncio.gather(run("hostile", hostile),
                                     run("healthy", observe(ctx, {"url": f"{site}/ok"})))
    assert fine.outcome == "up", fine
    return obs, finished


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def settled_fds(expected: int | None = None) -> int:
    """The process's descriptor count once sockets closed by either end have gone (the test
    servers share the process): once it is `expected`, or, none given, once two reads a poll
    apart agree. A leak never settles to `expected`: the count as it stands then, for the
    caller to show."""
    counts: list[int] = []

    async def settled() -> bool:
        counts.append(open_fds())
        if expected is not None:
            return counts[-1] == expected
        return len(counts) > 1 and counts[-1] == counts[-2]

    with contextlib.suppress(AssertionError):
        await wait_for(settled, timeout=2.0)
    return counts[-1]


# --- features ----------------------------------------------------------------------------------

async def test_up_with_phases(ctx: Context, site: str) -> None:
    obs = await observe(ctx, {"url": f"{site}/ok"})
    assert (obs.outcome, obs.status_code, obs.error_kind) == ("up", 200, None)
    assert set(obs.phases) == {"dns", "connect", "first_byte"}
    assert obs.phases["dns"] == 0  # an IP literal is not looked up
    assert obs.latency_ms is not None
    assert obs.latency_ms >= obs.phases["connect"] + obs.phases["first_byte"]
    assert obs.tls_expiry_ms is None


async def test_request_as_sent(ctx: Context, site: str) -> None:
    """Method, body, headers and basic auth, checked with the check's own JSON assertions."""
    base = {"url": f"{site}/echo?x=1", "method": "PUT", "body": "payload",
            "headers": {"X-Test": "yes"}, "username": "user", "password": "pw"}
    for path, expected in [("$.method", "PUT"), ("$.path", "/echo?x=1"), ("$.body", "payload"),
                           ("$.test", "yes"), ("$.auth", "Basic dXNlcjpwdw=="),
                           ("$.encoding", "identity")]:
        obs = await observe(ctx, {**base, "json_path": path, "json_equals": expected})
        assert obs.outcome == "up", (path, obs)
    bearer = await observe(ctx, {"url": f"{site}/echo", "bearer_token": "t0k",
                                 "json_path": "$.auth", "json_equals": "Bearer t0k"})
    assert bearer.outcome == "up", bearer


@pytest.mark.parametrize(("path", "expected", "outcome"), [
    ("/status/500", None, "down"),
    ("/status/500", ["5xx"], "up"),
    ("/status/204", None, "up"),
    ("/status/302", None, "up"),  # not followed: the site answered
    ("/status/302", [200], "down"),
    ("/status/404", [200, "400-404"], "up"),
    ("/status/503", [200, 204, "3xx"], "down"),
])
async def test_expected_status(ctx: Context, site: str, path: str, expected: list[Any] | None,
                               outcome: str) -> None:
    spec: dict[str, Any] = {"url": site + path}
    if expected is not None:
        spec["expected_status"] = expected
    obs = await observe(ctx, spec)
    assert obs.outcome == outcome, obs
    assert obs.status_code == int(path.rsplit("/", 1)[1])
    if outcome == "down":
        assert obs.error_kind == "status"
        assert f"status {obs.status_code}, expected" in (obs.error or "")


@pytest.mark.parametrize(("extra", "kind", "message"), [
    ({"keyword": "all good"}, None, None),
    ({"keyword": "missing"}, "keyword", "'missing' not found in the body"),
    ({"keyword_absent": "error"}, None, None),
    ({"keyword_absent": "good"}, "keyword", "'good' found in the body"),
    ({"regex": r"good: \w+$"}, None, None),
    ({"regex": r"^bad"}, "regex", "no match for '^bad'"),
])
async def test_body_assertions(ctx: Context, site: str, extra: dict[str, Any], kind: str | None,
                               message: str | None) -> None:
    obs = await observe(ctx, {"url": f"{site}/ok", **extra})
    assert obs.error_kind == kind, obs
    assert obs.outcome == ("up" if kind is None else "down")
    if message:
        assert message in (obs.error or "")


async def test_body_beyond_the_cap_is_not_read(ctx: Context, site: str) -> None:
    """A body past max_body_bytes is cut there: not a failure, but the keyword after it is not
    seen, and the message says how much was read."""
    cut = await observe(ctx, {"url": f"{site}/big"})
    assert cut.outcome == "up"
    missed = await observe(ctx, {"url": f"{site}/big", "keyword": "needle"})
    assert (missed.outcome, missed.error_kind) == ("down", "keyword")
    assert "(first 65536 bytes read)" in (missed.error or "")
    found = await observe(ctx, {"url": f"{site}/big", "keyword": "needle",
                                "max_body_bytes": 200 * 1024})
    assert found.outcome == "up", found


async def test_chunked_body(ctx: Context, site: str) -> None:
    obs = await observe(ctx, {"url": f"{site}/chunked", "regex": "^first second third$"})
    assert obs.outcome == "up", obs


@pytest.mark.parametrize(("extra", "error"), [
    ({"json_path": "$.status"}, None),
    ({"json_path": "$.status", "json_equals": "ok"}, None),
    ({"json_path": "$.count", "json_equals": 2.0}, None),
    ({"json_path": "$.ready", "json_equals": True}, None),
    ({"json_path": "$.ready", "json_equals": 1}, "$.ready is true, expected 1"),
    ({"json_path": "$.none", "json_one_of": [None]}, None),
    ({"json_path": "$.status", "json_one_of": ["ok", "degraded"]}, None),
    ({"json_path": "$.services[*].status", "json_equals": "ok"}, None),
    ({"json_path": "$.mixed[*].status", "json_equals": "ok"},
     '$.mixed[*].status is "warn", expected "ok"'),
    ({"json_path": "$.mixed[*].status", "json_one_of": ["ok", "warn"]}, None),
    ({"json_path": "$.services[?(@.name == 'db')].status", "json_equals": "ok"}, None),
    ({"json_path": "$.status", "json_equals": "down"}, '$.status is "ok", expected "down"'),
    ({"json_path": "$.absent"}, "$.absent matched nothing"),
    ({"json_path": "$.services", "json_equals": [{"name": "db", "status": "ok"},
                                                {"name": "cache", "status": "ok"}]}, None),
])
async def test_json_assertions(ctx: Context, site: str, extra: dict[str, Any],
                               error: str | None) -> None:
    obs = await observe(ctx, {"url": f"{site}/health", **extra})
    assert obs.error == error, obs
    assert obs.outcome == ("up" if error is None else "down")
    assert obs.error_kind == (None if error is None else "json")


async def test_json_assertion_on_a_body_that_is_not_json(ctx: Context, site: str) -> None:
    obs = await observe(ctx, {"url": f"{site}/ok", "json_path": "$.status"})
    assert (obs.outcome, obs.error_kind) == ("down", "json")
    assert "the body is not JSON" in (obs.error or "")


@pytest.mark.parametrize(("extra", "error"), [
    ({"header_equals": {"X-Version": "1.2.3"}}, None),
    ({"header_equals": {"x-version": "1.2.4"}}, "header x-version is '1.2.3', expected '1.2.4'"),
    ({"header_equals": {"X-Missing": "1"}}, "header X-Missing is missing, expected '1'"),
    ({"header_regex": {"Content-Type": r"^text/plain\b"}}, None),
    ({"header_regex": {"x-version": r"^2\."}}, "header x-version is '1.2.3', expected to match"),
])
async def test_header_assertions(ctx: Context, site: str, extra: dict[str, Any],
                                 error: str | None) -> None:
    obs = await observe(ctx, {"url": f"{site}/versioned", **extra})
    assert obs.error_kind == (None if error is None else "header"), obs
    if error:
        assert (obs.error or "").startswith(error)


async def test_degraded_when_slower_than_the_threshold(ctx: Context, site: str) -> None:
    slow_ok = await observe(ctx, {"url": f"{site}/slow/150", "degraded_ms": 50})
    assert (slow_ok.outcome, slow_ok.error_kind) == ("degraded", "latency")
    assert "degraded above 50 ms" in (slow_ok.error or "")
    fast = await observe(ctx, {"url": f"{site}/ok", "degraded_ms": 5_000})
    assert fast.outcome == "up"
    failing = await observe(ctx, {"url": f"{site}/slow/150", "degraded_ms": 50,
                                  "keyword": "nope"})
    assert (failing.outcome, failing.error_kind) == ("down", "keyword")


async def test_head_request_does_not_wait_for_the_announced_body(ctx: Context,
                                                                 site: str) -> None:
    obs = await observe(ctx, {"url": f"{site}/big", "method": "HEAD"}, 2.0)
    assert (obs.outcome, obs.status_code) == ("up", 200), obs


# --- redirects ---------------------------------------------------------------------------------

async def test_redirects_followed(ctx: Context, site: str) -> None:
    obs = await observe(ctx, {"url": f"{site}/redirect/3", "follow_redirects": True,
                              "keyword": "all good"})
    assert (obs.outcome, obs.status_code) == ("up", 200), obs
    assert obs.phases["connect"] > 0


async def test_too_many_redirects(ctx: Context, site: str) -> None:
    obs = await observe(ctx, {"url": f"{site}/redirect/3", "follow_redirects": True,
                              "max_redirects": 2})
    assert (obs.outcome, obs.error_kind, obs.status_code) == ("down", "redirects", 302)
    assert obs.error == "more than 2 redirects"


async def test_redirect_loop(ctx: Context, site: str) -> None:
    obs, _ = await beside_healthy(
        ctx, site, observe(ctx, {"url": f"{site}/loop/a", "follow_redirects": True,
                                 "max_redirects": 30}))
    assert (obs.outcome, obs.error_kind) == ("down", "redirects")
    assert obs.error == f"redirect loop: back to {site}/loop/a"


async def test_see_other_turns_a_post_into_a_get(ctx: Context, site: str) -> None:
    obs = await observe(ctx, {"url": f"{site}/see-other", "method": "POST", "body": "x",
                              "follow_redirects": True, "json_path": "$.method",
                              "json_equals": "GET"})
    assert obs.outcome == "up", obs


async def test_credentials_stay_on_their_origin(ctx: Context, site: str) -> None:
    obs = await observe(ctx, {"url": f"{site}/elsewhere", "follow_redirects": True,
                              "bearer_token": "secret", "json_path": "$.auth",
                              "json_one_of": [None]})
    assert obs.outcome == "up", obs
    assert obs.phases["dns"] >= 0  # localhost was looked up on the second hop


# --- DNS and connect ---------------------------------------------------------------------------

async def test_dns_failure(ctx: Context) -> None:
    obs = await observe(ctx, {"url": "http://no-such-host.invalid/"})
    assert (obs.outcome, obs.error_kind) == ("down", "dns")
    assert "no-such-host.invalid" in (obs.error or "")


async def test_connection_refused(ctx: Context) -> None:
    port = free_port()
    obs = await observe(ctx, {"url": f"http://127.0.0.1:{port}/"})
    assert (obs.outcome, obs.error_kind) == ("down", "connect")
    assert obs.error == f"127.0.0.1 port {port}: Connection refused"


async def test_names_are_cached_for_a_short_ttl(site: str) -> None:
    calls = []

    class Counting(Resolver):
        async def _lookup(self, host: str, port: int) -> list[tuple[int, str]]:
            calls.append(host)
            await asyncio.sleep(0.02)
            return await super()._lookup(host, port)

    resolver = Counting(ttl_s=0.3)
    port = int(site.rsplit(":", 1)[1])
    together = await asyncio.gather(*(resolver.resolve("localhost", port) for _ in range(5)))
    assert calls == ["localhost"]  # concurrent lookups share one call
    assert all(looked_up for _, looked_up in together)
    addresses, looked_up = await resolver.resolve("localhost", port)
    assert not looked_up
    assert (2, "127.0.0.1") in addresses

    async def looked_up_again() -> bool:
        return (await resolver.resolve("localhost", port))[1]

    await wait_for(looked_up_again, timeout=5.0)  # answered from the cache until it expired
    assert calls == ["localhost", "localhost"]
    assert await resolver.resolve("::1", port) == ([(10, "::1")], False)
    resolver.close()


async def test_dns_phase_is_zero_when_cached(ctx: Context, site: str) -> None:
    url = site.replace("127.0.0.1", "localhost") + "/ok"
    first = await observe(ctx, {"url": url})
    second = await observe(ctx, {"url": url})
    assert first.outcome == second.outcome == "up"
    assert first.phases["dns"] > 0
    assert second.phases["dns"] == 0


# --- response parsing --------------------------------------------------------------------------

@pytest.mark.parametrize(("response", "then_close", "outcome", "kind", "status"), [
    (b"HTTP/1.1 200 OK\r\n\r\nbody until the end", True, "up", None, 200),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False, "up", None, 200),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
     False, "up", None, 201),
    (b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
     b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False, "up", None, 200),
    (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", False, "up", None, 200),  # bare LF
    (b"HTTP/1.1 204 No Content\r\n\r\n", False, "up", None, 204),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n",
     False, "up", None, 200),
    (b"SSH-2.0-OpenSSH_9.6\r\n", False, "down", "protocol", None),
    (b"HTTP/1.1 abc OK\r\n\r\n", False, "down", "protocol", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n", False, "down", "protocol", None),
    (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n", False, "down",
     "protocol", None),
    (b"", True, "down", "empty_reply", None),
    (b"HTTP/1.1 200 OK\r\nContent-Le", True, "down", "reset", None),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", True, "down", "reset", None),
])
async def test_response_parsing(ctx: Context, response: bytes, then_close: bool, outcome: str,
                                kind: str | None, status: int | None) -> None:
    async with RawServer(answer(response, then_close)) as server:
        obs = await observe(ctx, {"url": server.url("/p")}, timeout_s=3.0)
        await server.wait_idle()
    assert (obs.outcome, obs.error_kind, obs.status_code) == (outcome, kind, status), obs
    assert server.seen[0].request.startswith(b"GET /p HTTP/1.1\r\n")


async def test_endless_trailers_are_not_read(ctx: Context) -> None:
    """Memory stays bounded past the body too: reading stops, the body read so far stands."""
    response = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
                b"X-Trailer: " + b"t" * (1024 * 1024))
    async with RawServer(answer(response)) as server:
        obs = await observe(ctx, {"url": server.url(), "keyword": "ok"}, timeout_s=3.0)
    assert (obs.outcome, obs.status_code) == ("up", 200), obs


async def test_redirect_to_an_unusable_url(ctx: Context) -> None:
    response = b"HTTP/1.1 302 Found\r\nLocation: ftp://files.example/\r\nContent-Length: 0\r\n\r\n"
    async with RawServer(answer(response)) as server:
        obs = await observe(ctx, {"url": server.url(), "follow_redirects": True})
        not_followed = await observe(ctx, {"url": server.url()})
    assert (obs.outcome, obs.error_kind, obs.status_code) == ("down", "redirects", 302)
    assert obs.error == "redirect to an invalid URL: 'ftp://files.example/'"
    assert not_followed.outcome == "up"


async def test_endless_interim_responses_are_bounded(ctx: Context) -> None:
    flood = b"HTTP/1.1 102 Processing\r\nX-Pad: " + b"p" * 1000 + b"\r\n\r\n"
    async with RawServer(answer(flood * 100)) as server:
        obs = await observe(ctx, {"url": server.url()}, timeout_s=3.0)
    assert (obs.outcome, obs.error_kind) == ("down", "protocol")
    assert "response head longer than" in (obs.error or "")


# --- hostile targets ---------------------------------------------------------------------------

async def test_headers_one_byte_per_second_time_out_and_close(ctx: Context, site: str) -> None:
    async with RawServer(drip(SLOW_HEAD, every_s=1.0)) as server:
        obs, finished = await beside_healthy(
            ctx, site, observe(ctx, {"url": server.url()}, timeout_s=1.0))
        await server.wait_idle()
    assert (obs.outcome, obs.error_kind) == ("down", "timeout")
    # Cancelled at the deadline (the outcome says so), the socket closed, and the healthy
    # check beside it was not held up.
    assert finished == ["healthy", "hostile"]
    [seen] = server.seen
    assert seen.closed is not None
    assert seen.sent < len(SLOW_HEAD)


async def test_a_gigabyte_body_is_read_up_to_the_cap(ctx: Context, site: str) -> None:
    async with RawServer(endless_body(GIB)) as server:
        obs, _ = await beside_healthy(
            ctx, site, observe(ctx, {"url": server.url(), "keyword": "zzz"}, timeout_s=10.0))
        await server.wait_idle()
    assert (obs.outcome, obs.error_kind, obs.status_code) == ("down", "keyword", 200)
    assert "(first 65536 bytes read)" in (obs.error or "")  # not a timeout: done in time
    [seen] = server.seen
    assert seen.closed is not None
    assert seen.sent < 16 * 1024 * 1024  # socket buffers, not a gigabyte: reading stopped


async def test_connection_reset_mid_response(ctx: Context, site: str) -> None:
    partial = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nstart of the body"
    async with RawServer(cut_off(partial, reset=True)) as server:
        obs, _ = await beside_healthy(
            ctx, site, observe(ctx, {"url": server.url()}, timeout_s=3.0))
    assert (obs.outcome, obs.error_kind) == ("down", "reset")  # not a timeout: done in time


async def test_a_silent_server_times_out(ctx: Context, site: str) -> None:
    async with RawServer(silent()) as server:
        obs, finished = await beside_healthy(
            ctx, site, observe(ctx, {"url": server.url()}, timeout_s=0.5))
        await server.wait_idle()
    assert obs.error_kind == "timeout"
    assert finished == ["healthy", "hostile"]
    assert server.seen[0].closed is not None


# --- TLS ---------------------------------------------------------------------------------------

async def test_https_up_with_expiry(ctx: Context, certs: Certs) -> None:
    async with RawServer(answer(OK), tls=certs.valid) as server:
        obs = await observe(ctx, {"url": server.url("/secure"), "keyword": "ok"})
    assert (obs.outcome, obs.status_code) == ("up", 200), obs
    assert set(obs.phases) == {"dns", "connect", "tls", "first_byte"}
    assert obs.phases["tls"] > 0
    assert obs.tls_expiry_ms == int(certs.valid_not_after.timestamp()) * 1000


async def test_sni_carries_the_host_name(ctx: Context, certs: Certs) -> None:
    names: list[str | None] = []

    def record(_: ssl.SSLObject, name: str | None, __: ssl.SSLContext) -> None:
        names.append(name)

    tls = certs.valid
    tls.sni_callback = record
    try:
        async with RawServer(answer(OK), tls=tls) as server:
            by_name = await observe(ctx, {"url": server.url(host="localhost")})
            by_ip = await observe(ctx, {"url": server.url()})
    finally:
        tls.sni_callback = None
    assert by_name.outcome == by_ip.outcome == "up"
    assert names == ["localhost", None]  # no SNI for an IP address (RFC 6066)


@pytest.mark.parametrize(("which", "kind", "reason"), [
    ("self_signed", "tls_untrusted", "self-signed certificate"),
    ("expired", "tls_expired", "certificate has expired"),
    ("wrong_host", "tls_hostname",
     "IP address mismatch, certificate is not valid for '127.0.0.1'."),
])
async def test_bad_certificates(ctx: Context, certs: Certs, site: str, which: str, kind: str,
                                reason: str) -> None:
    async with RawServer(answer(OK), tls=getattr(certs, which)) as server:
        obs, _ = await beside_healthy(ctx, site, observe(ctx, {"url": server.url()}))
    assert (obs.outcome, obs.error_kind) == ("down", kind), obs
    assert obs.error == f"certificate verify failed: {reason}"
    assert "tls" not in obs.phases
    assert "connect" in obs.phases


async def test_wrong_host_name(ctx: Context, certs: Certs) -> None:
    async with RawServer(answer(OK), tls=certs.wrong_host) as server:
        obs = await observe(ctx, {"url": server.url(host="localhost")})
    assert obs.error == ("certificate verify failed: Hostname mismatch, certificate is not "
                         "valid for 'localhost'.")


async def test_verify_off_accepts_any_certificate(ctx: Context, certs: Certs) -> None:
    async with RawServer(answer(OK), tls=certs.self_signed) as server:
        obs = await observe(ctx, {"url": server.url(), "verify_tls": False})
    assert obs.outcome == "up", obs
    assert obs.tls_expiry_ms is None  # not verified, so not reported


async def test_tls_to_a_plain_http_server(ctx: Context) -> None:
    async with RawServer(blurt(b"HTTP/1.1 400 Bad Request\r\n\r\n")) as server:
        obs = await observe(ctx, {"url": server.url().replace("http:", "https:")}, 3.0)
    assert (obs.outcome, obs.error_kind) == ("down", "tls"), obs
    assert (obs.error or "").startswith("handshake failed")


# --- resources ---------------------------------------------------------------------------------

async def test_no_descriptor_leaks(ctx: Context, certs: Certs) -> None:
    """Checks that time out, fail TLS, get refused or succeed all leave no socket open."""
    async with (RawServer(drip(SLOW_HEAD, every_s=1.0)) as slow_server,
                RawServer(answer(OK), tls=certs.expired) as expired,
                RawServer(answer(OK)) as fine):
        refused = f"http://127.0.0.1:{free_port()}/"
        await observe(ctx, {"url": fine.url()})  # warm-up: lazily opened resources
        await fine.wait_idle()
        before = open_fds()
        urls = [slow_server.url(), expired.url(), fine.url(), refused] * 10
        results = await asyncio.gather(*(observe(ctx, {"url": u}, 0.3) for u in urls))
        for server in (slow_server, expired, fine):
            await server.wait_idle()
        after = await settled_fds(before)
    assert [r.error_kind for r in results[:4]] == ["timeout", "tls_expired", None, "connect"]
    assert after == before


# --- the real executor -------------------------------------------------------------------------

async def test_executor_cancels_a_slow_check_at_its_timeout(r: aioredis.Redis, keys: Keys,
                                                            site: str) -> None:
    async with RawServer(drip(SLOW_HEAD, every_s=1.0)) as server:
        got = await run_checks(r, keys, [
            check_due("slow", "http", {"url": server.url()}, timeout_ms=700),
            check_due("fine", "http", {"url": f"{site}/ok"}, timeout_ms=700),
        ], Settings(max_timeout_ms=5_000, instance_id="exec-http"))
        await server.wait_idle()
    assert (got["slow"].outcome, got["slow"].error_kind) == ("down", "timeout")
    assert got["fine"].outcome == "up"
    assert got["fine"].finished_ms < got["slow"].finished_ms
    [seen] = server.seen
    assert seen.closed is not None
    assert seen.sent < len(SLOW_HEAD)  # cancelled before the server got far



def respond(body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in (f"Content-Length: {len(body)}", *headers))
    return f"HTTP/1.1 200 OK\r\n{head}\r\n".encode() + body


# Backtracks for ever on a backtracking engine: 2**10000 ways to split the a's before the !.
CATASTROPHIC = r"(a+)+$"
BAIT = "a" * 10_000 + "!"
# 900 objects deep (orjson allows 1024): `$..a..a..a` has ~900**3/6 = 1.2e8 matches in it.
DEEP = b'{"a":' * 900 + b"1" + b"}" * 900


async def test_hostile_patterns_and_bodies_stall_no_check(r: aioredis.Redis, keys: Keys,
                                                         site: str) -> None:
    """A catastrophic regex on the body and on a header, and a JSON path with a huge number
    of matches in a small body, beside healthy checks through the real executor: each ends
    with its own verdict and the healthy checks are up (a backtracking regex engine froze the
    loop here for good, and the JSON path for hours)."""
    async with (RawServer(answer(respond(BAIT.encode()))) as body_bait,
                RawServer(answer(respond(b"ok", f"X-Bait: {BAIT}"))) as header_bait,
                RawServer(answer(respond(DEEP, "Content-Type: application/json"))) as deep):
        hostile = {
            "body-regex": {"url": body_bait.url(), "regex": CATASTROPHIC},
            "header-regex": {"url": header_bait.url(), "header_regex": {"X-Bait": CATASTROPHIC}},
            "json-path": {"url": deep.url(), "json_path": "$..a..a..a"},
        }
        healthy = {
            "keyword": {"url": f"{site}/ok", "keyword": "good"},
            "regex": {"url": f"{site}/ok", "regex": r"good: \w+$"},
            "json": {"url": f"{site}/health", "json_path": "$.services[*].status",
                     "json_equals": "ok"},
        }
        got = await run_checks(r, keys, [
            check_due(mid, "http", spec, timeout_ms=2_000)
            for mid, spec in {**hostile, **healthy}.items()
        ], Settings(max_timeout_ms=5_000, instance_id="exec-hostile"))
    assert {mid: (got[mid].outcome, got[mid].error_kind) for mid in got} == {
        "body-regex": ("down", "regex"), "header-regex": ("down", "header"),
        "json-path": ("down", "json"),
        "keyword": ("up", None), "regex": ("up", None), "json": ("up", None)}
    assert "no match for '(a+)+$'" in (got["body-regex"].error or "")
    assert "$..a..a..a was not evaluated: it needs more than" in (got["json-path"].error or "")


# --- uvloop, as the executor runs in production ------------------------------------------------

def run_in_uvloop(certs: Certs, scenario: Callable[[Context], Awaitable[None]]) -> None:
    async def main() -> None:
        ctx = new_context(certs)
        try:
            await scenario(ctx)
        finally:
            ctx.resolver.close()
            await ctx.redis.aclose()
    uvloop.run(main())


async def test_on_uvloop(certs: Certs, site: str) -> None:
    """The same client on uvloop (in a thread; the servers stay on the test loop)."""
    async with (RawServer(answer(OK), tls=certs.valid) as secure,
                RawServer(answer(OK), tls=certs.self_signed) as self_signed,
                RawServer(drip(SLOW_HEAD, every_s=1.0)) as slow_server,
                RawServer(endless_body(GIB)) as huge,
                RawServer(cut_off(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab",
                                  reset=True)) as reset):
        results: dict[str, Observation] = {}
        leaked: list[int] = []

        async def scenario(ctx: Context) -> None:
            specs = {"plain": {"url": f"{site}/ok", "keyword": "good"},
                     "secure": {"url": secure.url()},
                     "self_signed": {"url": self_signed.url()},
                     "slow": {"url": slow_server.url()},
                     "huge": {"url": huge.url()},
                     "reset": {"url": reset.url()},
                     "refused": {"url": f"http://127.0.0.1:{free_port()}/"}}
            # libuv opens a /dev/null descriptor once per loop (its spare for EMFILE).
            await observe(ctx, specs["plain"])
            before = await settled_fds()
            observed = await asyncio.gather(*(observe(ctx, s, 1.0) for s in specs.values()))
            results.update(zip(specs, observed, strict=True))
            leaked.append(await settled_fds(before) - before)

        await asyncio.to_thread(run_in_uvloop, certs, scenario)
        for server in (secure, self_signed, slow_server, huge, reset):
            await server.wait_idle()
    assert {name: (o.outcome, o.error_kind) for name, o in results.items()} == {
        "plain": ("up", None), "secure": ("up", None), "self_signed": ("down", "tls_untrusted"),
        "slow": ("down", "timeout"), "huge": ("up", None), "reset": ("down", "reset"),
        "refused": ("down", "connect")}
    assert leaked == [0]  # no socket left open by the uvloop client
    assert results["secure"].tls_expiry_ms == int(certs.valid_not_after.timestamp()) * 1000
    assert results["refused"].error
    assert results["refused"].error.endswith("Connection refused")
    assert huge.seen[0].sent < 16 * 1024 * 1024

