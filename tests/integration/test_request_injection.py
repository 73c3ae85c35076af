"""No field of a monitor can smuggle a line into what a check sends: CR, LF and NUL in a
field that reaches a request line, a header or a protocol field, and URLs that a parser would
quietly rewrite (an empty host, port 0, control characters), are refused with the field
named, by the API (a 422) and by the executor for a definition that got past it."""

from __future__ import annotations

from typing import Any

import pytest

from engine.settings import Settings
from tests.support.hostile import RawServer, answer
from tests.support.kind_executor import check_due, run_checks

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
INJECTED = "t0k\r\nX-Injected-Bearer: 1"


async def test_a_bearer_token_cannot_inject_a_header(r, keys):
    """The issue's attack, as a stored definition the executor is handed: before, the target
    received `X-Injected-Bearer: 1` as a header of its own."""
    async with RawServer(answer(OK)) as target:
        due = check_due("inject", "http", {"url": target.url("/"), "bearer_token": INJECTED})
        got = await run_checks(r, keys, [due], Settings(instance_id="exec-inject"))
    assert [seen.request for seen in target.seen] == []
    assert (got["inject"].outcome, got["inject"].error_kind) == ("error", "spec")
    assert "http.bearer_token: Value error, cannot hold CR, LF or NUL" in (
        got["inject"].error or "")


def monitor(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"m-{kind}", "kind": kind, "interval": "30s", kind: spec}


URL = "http://example.test/"


@pytest.mark.parametrize(("kind", "spec", "field", "reason"), [
    ("http", {"url": URL, "bearer_token": INJECTED}, "http.bearer_token", "CR, LF or NUL"),
    ("http", {"url": URL, "username": "u\nX-A: 1"}, "http.username", "CR, LF or NUL"),
    ("http", {"url": URL, "username": "u", "password": "p\0"}, "http.password", "NUL"),
    ("http", {"url": URL, "headers": {"X-A": "1\r\nX-B: 2"}}, "http.headers", "CR, LF"),
    ("http", {"url": URL, "headers": {"X-A\r\nX-B": "2"}}, "http.headers.X-A\r\nX-B.[key]",
     "not a valid header name"),
    ("http", {"url": "http://example.test/a\r\nX-B: 2"}, "http.url", "control characters"),
    ("http", {"url": "http://example.test/a\tb"}, "http.url", "control characters"),
    ("http", {"url": "http:///path"}, "http.url", "no host"),
    ("http", {"url": "http://example.test:0/"}, "http.url", "port 0"),
    ("tcp", {"host": "example.test\r\n", "port": 25}, "tcp.host", "CR, LF or NUL"),
    # The issue's attack on Redis: a second command after the first line's end.
    ("tcp", {"host": "cache.test", "port": 6379, "send": "SET viatcp 1\r\nCONFIG GET dir\r\n"},
     "tcp.send", "one line of text"),
    ("tcp", {"host": "cache.test", "port": 6379, "send": "PING\n\r\n"}, "tcp.send",
     "one line of text"),
    ("tcp", {"host": "cache.test", "port": 6379, "send": "PING\0"}, "tcp.send", "NUL"),
    ("tcp", {"host": "cache.test", "port": 6379, "send_hex": "0d0"}, "tcp.send_hex", "pattern"),
    ("tls", {"host": "example.test", "server_name": "a\0b"}, "tls.server_name", "NUL"),
    ("icmp", {"host": "example.test\n"}, "icmp.host", "CR, LF or NUL"),
    ("redis", {"url": "redis://:pw%0D%0ASET%20k%201@cache.test:6379/0"}, "redis.url",
     "CR, LF or NUL"),
    ("postgres", {"dsn": "postgresql://u%00options@db.test/x"}, "postgres.dsn", "CR, LF or NUL"),
    ("postgres", {"dsn": "postgresql://u@db.test/x", "query": "SELECT 1\0"}, "postgres.query",
     "NUL"),
])
async def test_the_api_refuses_the_field_with_a_422(api, pool, kind, spec, field, reason):
    resp = await api.post("/api/v1/monitors", json=monitor(kind, spec))
    assert resp.status == 422, await resp.text()
    errors = (await resp.json())["errors"]
    assert [e["field"] for e in errors] == [field]
    assert reason in errors[0]["message"]
    assert await pool.fetchval("SELECT count(*) FROM monitors") == 0


async def test_tcp_send_is_one_line_and_send_hex_the_raw_bytes(api, pool):
    """A line protocol's one line keeps its line ending (PING, EHLO); a payload that is binary
    or several lines on purpose is send_hex, sent as it is."""
    for name, spec in (("line", {"send": "PING\r\n"}), ("lf", {"send": "QUIT\n"}),
                       ("hex", {"send_hex": "2a310d0a24340d0a50494e470d0a"})):
        resp = await api.post("/api/v1/monitors", json={**monitor(
            "tcp", {"host": "example.test", "port": 6379, "expect": "+PONG", **spec}),
            "id": f"tcp-{name}"})
        assert resp.status == 201, await resp.text()
