"""Check precision (issue 9.10): each hostile target answers with the error kind that says what
went wrong, and a failed check records the time it took. Real servers on 127.0.0.1: raw
asyncio servers (tests/support/hostile.py), trustme certificates, a UDP nameserver."""

from __future__ import annotations

import asyncio
import socket
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dns.asyncresolver
import dns.nameserver
import pytest
import trustme
from pydantic import ValidationError

from engine.events import Observation
from engine.resolver import Address, Resolver
from engine.settings import Settings
from executors.base import Context
from executors.kinds.http.spec import HttpSpec
from tests.support.dns_server import SilentServer, UdpServer
from tests.support.helpers import free_port
from tests.support.hostile import (
    Handler,
    RawServer,
    Seen,
    answer,
    blurt,
    close_with_rst,
    server_context,
    silent,
)
from tests.support.kind_executor import check_due, observe, run_checks

pytestmark = pytest.mark.timeout(60)

NAME = "vigil.test"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("precision") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def leaf(ca: trustme.CA, *, days_left: float,
         names: tuple[str, ...] = (NAME, "127.0.0.1", "localhost")) -> ssl.SSLContext:
    """A server context for a certificate of `ca` with `days_left` before it expires."""
    now = datetime.now(UTC)
    return server_context(ca.issue_cert(*names, not_before=now - timedelta(days=400),
                                        not_after=now + timedelta(days=days_left)))


async def tls_check(ctx: Context, spec: dict[str, Any]) -> Observation:
    return await observe(ctx, "tls", spec, 2_000)


# --- a timeout records the time spent ------------------------------------------------------

async def test_a_timeout_records_the_time_spent_not_the_setting(r, keys) -> None:
    async with RawServer(silent()) as server:
        got = await run_checks(r, keys, [check_due("slow", "http", {"url": server.url()},
                                                   timeout_ms=300)],
                               Settings(max_timeout_ms=5_000, instance_id="exec-precision"))
    result = got["slow"]
    assert (result.outcome, result.error_kind) == ("down", "timeout")
    assert result.latency_ms is not None
    # The timer fires at the deadline or after it, never exactly at the configured figure,
    # and the time spent fits inside the run's own span.
    assert result.latency_ms != 300
    assert 299 < result.latency_ms <= result.finished_ms - result.started_ms + 1


# --- failed tls checks record latency ------------------------------------------------------

async def test_failed_tls_checks_record_latency(ctx: Context, ca: trustme.CA,
                                                ca_file: str) -> None:
    async with (RawServer(silent(), tls=leaf(ca, days_left=-2)) as expired,
                RawServer(blurt(b"HTTP/1.1 400 Bad Request\r\n\r\n")) as plain):
        failures = {
            "expired": await tls_check(ctx, {"host": "127.0.0.1", "port": expired.port,
                                             "ca_file": ca_file}),
            "not-tls": await tls_check(ctx, {"host": "127.0.0.1", "port": plain.port}),
            "refused": await tls_check(ctx, {"host": "127.0.0.1", "port": free_port()}),
            "dns": await tls_check(ctx, {"host": "no-such-host.invalid"}),
        }
    kinds = {which: obs.error_kind for which, obs in failures.items()}
    assert kinds == {"expired": "tls_expired", "not-tls": "tls", "refused": "connect",
                     "dns": "dns"}
    for which, obs in failures.items():
        assert obs.latency_ms is not None, which
        assert obs.latency_ms > 0, which



# --- a clean close with no reply, an RST at connect --------------------------------------------

async def reset_at_once(_: asyncio.StreamReader, writer: asyncio.StreamWriter, __: Seen) -> None:
    close_with_rst(writer)


def spec_for(kind: str, server: RawServer) -> tuple[str, dict[str, Any]]:
    if kind in ("http", "https"):
        return "http", {"url": server.url().replace("http:", f"{kind}:")}
    if kind == "tcp":
        return "tcp", {"host": "127.0.0.1", "port": server.port, "expect": "SSH-"}
    return "tls", {"host": "127.0.0.1", "port": server.port}


@pytest.mark.parametrize(("kind", "handler", "error_kind"), [
    # Read the request, then a FIN: the server took it and gave up.
    ("http", answer(b"", then_close=True), "empty_reply"),
    # Accept and hang up before any banner.
    ("tcp", blurt(b""), "empty_reply"),
    # An RST as soon as the connection is accepted, whatever the kind was about to say.
    ("https", reset_at_once, "reset"),
    ("tls", reset_at_once, "reset"),
    ("http", reset_at_once, "reset"),
    ("tcp", reset_at_once, "reset"),
])
async def test_close_and_reset_are_told_apart(ctx: Context, kind: str, handler: Handler,
                                              error_kind: str) -> None:
    async with RawServer(handler) as server:
        name, spec = spec_for(kind, server)
        obs = await observe(ctx, name, spec, 2_000)
        await server.wait_idle()
    assert (obs.outcome, obs.error_kind) == ("down", error_kind), obs
    assert obs.latency_ms is not None


# --- a stalled resolver is dns_timeout, naming the name ------------------------------------------

class AtNameserver(Resolver):
    """The executor's resolver with its lookups sent to one nameserver instead of the system's
    (getaddrinfo cannot be pointed at a test server): dnspython asks it, for A records."""

    def __init__(self, server: UdpServer) -> None:
        super().__init__()
        self.dns = dns.asyncresolver.Resolver(configure=False)
        self.dns.nameservers = [dns.nameserver.Do53Nameserver(server.host, server.port)]

    async def _lookup(self, host: str, port: int) -> list[Address]:
        # A lifetime far beyond any check's timeout: only the check's own limit ends it.
        answer = await self.dns.resolve(host, "A", lifetime=60, search=False)
        return [(socket.AF_INET, rdata.address) for rdata in answer]


async def test_a_stalled_resolver_is_dns_timeout_naming_the_name(r, keys) -> None:
    stalled = await SilentServer().start()
    name = "stalled.example.test"
    try:
        async with RawServer(silent()) as server:
            specs = {"http": {"url": f"http://{name}:{server.port}/"},
                     "tcp": {"host": name, "port": server.port},
                     "tls": {"host": name, "port": server.port}}
            got = await run_checks(
                r, keys, [check_due(f"dns-{kind}", kind, spec, timeout_ms=600)
                          for kind, spec in specs.items()],
                Settings(max_timeout_ms=5_000, instance_id="exec-dns-stall"),
                resolver=AtNameserver(stalled))
    finally:
        stalled.stop()
    assert stalled.queries > 0  # the lookups did reach the silent nameserver
    for kind in specs:
        result = got[f"dns-{kind}"]
        assert (result.outcome, result.error_kind) == ("down", "dns_timeout"), (kind, result)
        assert name in (result.error or "")
        assert result.latency_ms is not None


# --- the http kind's TLS failures have the tls kind's error kinds -------------------------------

@pytest.mark.parametrize(("names", "days_left", "signed_by_ours", "error_kind"), [
    (("127.0.0.1",), -2, True, "tls_expired"),
    (("other.test",), 90, True, "tls_hostname"),
    (("127.0.0.1",), 90, False, "tls_untrusted"),
])
async def test_http_tls_failures_are_the_tls_kinds(r, keys, ca: trustme.CA, ca_file: str,
                                                   names: tuple[str, ...], days_left: float,
                                                   signed_by_ours: bool,
                                                   error_kind: str) -> None:
    ctx = Context(r, keys)
    ca.configure_trust(ctx.tls_verify)
    served = leaf(ca if signed_by_ours else trustme.CA(), days_left=days_left, names=names)
    async with RawServer(answer(OK), tls=served) as server:
        via_http = await observe(ctx, "http", {"url": server.url()}, 2_000)
        via_tls = await tls_check(ctx, {"host": "127.0.0.1", "port": server.port,
                                        "ca_file": ca_file})
    assert (via_http.outcome, via_http.error_kind) == ("down", error_kind), via_http
    assert via_tls.error_kind == error_kind, via_tls


# --- the http kind: ca_file, cert_warn_days --------------------------------------------------

async def test_http_ca_file_trusts_a_private_ca(ctx: Context, ca: trustme.CA, ca_file: str,
                                                tmp_path: Path) -> None:
    async with RawServer(answer(OK), tls=leaf(ca, days_left=90)) as server:
        url = server.url()
        trusted = await observe(ctx, "http", {"url": url, "ca_file": ca_file}, 2_000)
        system = await observe(ctx, "http", {"url": url}, 2_000)
        missing = await observe(ctx, "http", {"url": url, "ca_file": str(tmp_path / "no.pem")},
                                2_000)
    assert trusted.outcome == "up", trusted
    assert trusted.tls_expiry_ms is not None
    assert system.error_kind == "tls_untrusted"  # the executor's store knows no private CA
    assert (missing.outcome, missing.error_kind) == ("error", "spec")
    assert "no.pem" in (missing.error or "")
    with pytest.raises(ValidationError, match="ca_file needs verify_tls"):
        HttpSpec.model_validate({"url": url, "ca_file": ca_file, "verify_tls": False})


@pytest.mark.parametrize(("warn_days", "outcome"), [(14, "degraded"), (3, "up"), (None, "up")])
async def test_http_certificate_expiring_within_cert_warn_days_is_degraded(
        ctx: Context, ca: trustme.CA, ca_file: str, warn_days: int | None,
        outcome: str) -> None:
    spec: dict[str, Any] = {"ca_file": ca_file}
    if warn_days is not None:
        spec["cert_warn_days"] = warn_days
    async with RawServer(answer(OK), tls=leaf(ca, days_left=5.5)) as server:
        obs = await observe(ctx, "http", {"url": server.url(), **spec}, 2_000)
    assert obs.outcome == outcome, obs
    assert obs.tls_expiry_ms is not None
    if outcome == "degraded":
        assert obs.error_kind == "tls_expiring"
        assert "expires in 5 days" in (obs.error or "")
        assert "cert_warn_days is 14" in (obs.error or "")


# --- the http kind: a body over the cap can be a failure -------------------------------------

@pytest.mark.parametrize(("extra", "outcome", "error_kind"), [
    ({}, "up", None),  # cut at the cap, as before
    ({"body_over_cap": "truncate"}, "up", None),
    ({"body_over_cap": "fail"}, "down", "body_too_large"),
    ({"body_over_cap": "fail", "max_body_bytes": 200 * 1024}, "up", None),
])
async def test_http_body_over_the_cap(ctx: Context, extra: dict[str, Any], outcome: str,
                                      error_kind: str | None) -> None:
    body = b"x" * (100 * 1024)
    response = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    async with RawServer(answer(response)) as server:
        obs = await observe(ctx, "http", {"url": server.url(), **extra}, 2_000)
    assert (obs.outcome, obs.error_kind, obs.status_code) == (outcome, error_kind, 200), obs
    if error_kind:
        assert "65536 bytes" in (obs.error or "")
