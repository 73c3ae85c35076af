"""TLS certificate checks against real TLS servers on 127.0.0.1 with generated certificates."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trustme

from engine.events import Observation
from engine.monitors import SpecError
from engine.settings import Settings
from executors.base import Context
from executors.kinds import SCHEMA, tls
from tests.support.helpers import free_port
from tests.support.hostile import RawServer, blurt, self_signed_context, server_context, silent
from tests.support.kind_executor import check_due, observe, run_checks

NAME = "vigil.test"
NOW = datetime.now(UTC)


@dataclass
class Servers:
    ca_file: str
    ports: dict[str, int]
    not_after: dict[str, datetime]

    def spec(self, which: str, **extra: Any) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.ports[which], "server_name": NAME,
                "ca_file": self.ca_file, **extra}


@pytest.fixture(scope="module")
async def servers(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Servers]:
    directory = tmp_path_factory.mktemp("tls")
    ca, stranger = trustme.CA(), trustme.CA()
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    not_after = {
        "valid": NOW + timedelta(days=365),
        "soon": NOW + timedelta(days=5, hours=1),
        "expired": NOW - timedelta(days=3, hours=1),
    }
    contexts = {
        "valid": server_context(ca.issue_cert(NAME, "127.0.0.1", not_after=not_after["valid"])),
        "soon": server_context(ca.issue_cert(NAME, not_after=not_after["soon"])),
        "expired": server_context(ca.issue_cert(NAME, not_before=NOW - timedelta(days=90),
                                                not_after=not_after["expired"])),
        "stranger": server_context(stranger.issue_cert(NAME)),
        "self-signed": self_signed_context(directory, NAME),
    }
    async with contextlib.AsyncExitStack() as stack:
        started = {which: RawServer(silent(), tls=context) for which, context in contexts.items()}
        started["silent"] = RawServer(silent())  # accepts, never answers the ClientHello
        started["not-tls"] = RawServer(blurt(b"HTTP/1.1 400 Bad Request\r\n"
                                             b"Content-Length: 0\r\n\r\n"))
        ports = {which: (await stack.enter_async_context(server)).port
                 for which, server in started.items()}
        ports["refused"] = free_port()
        yield Servers(str(ca_file), ports, not_after)


async def run(ctx: Context, spec: dict[str, Any], timeout_ms: int = 3_000) -> Observation:
    return await observe(ctx, "tls", spec, timeout_ms)


def expiry_ms(servers: Servers, which: str) -> int:
    # X.509 times have whole seconds.
    return int(servers.not_after[which].replace(microsecond=0).timestamp()) * 1000


def test_spec_defaults():
    spec = tls.TlsSpec.model_validate({"host": "example.com"})
    assert (spec.port, spec.server_name, spec.warn_days, spec.ca_file) == (443, None, 14, None)


@pytest.mark.parametrize(("spec", "phrase"), [
    ({}, "tls.host"),
    ({"host": "a.test", "port": 70_000}, "tls.port"),
    ({"host": "a.test", "warn_days": -1}, "tls.warn_days"),
    ({"host": "a.test", "server_name": ""}, "tls.server_name"),
    ({"host": "a.test", "verify": False}, "tls.verify"),
])
def test_invalid_specs_name_the_field(spec, phrase):
    with pytest.raises(SpecError) as err:
        SCHEMA.parse([{"id": "t", "kind": "tls", "tls": spec}])
    assert phrase in str(err.value)


async def test_valid_certificate_is_up_with_its_expiry(ctx, servers):
    obs = await run(ctx, servers.spec("valid"))
    assert obs.outcome == "up", obs.error
    assert obs.tls_expiry_ms == expiry_ms(servers, "valid")
    assert set(obs.phases) == {"connect", "tls"}
    assert obs.latency_ms == pytest.approx(obs.phases["connect"] + obs.phases["tls"])


async def test_ip_address_is_checked_against_the_certificates_ip_names(ctx, servers):
    obs = await run(ctx, servers.spec("valid", server_name=None))
    assert obs.outcome == "up", obs.error


async def test_expiring_soon_is_degraded(ctx, servers):
    obs = await run(ctx, servers.spec("soon"))
    assert (obs.outcome, obs.error_kind) == ("degraded", "tls_expiring")
    assert "expires in 5 days" in (obs.error or "")
    assert obs.tls_expiry_ms == expiry_ms(servers, "soon")
    assert (await run(ctx, servers.spec("soon", warn_days=5))).outcome == "up"


async def test_expired_is_down_saying_how_long_ago(ctx, servers):
    obs = await run(ctx, servers.spec("expired"))
    assert (obs.outcome, obs.error_kind) == ("down", "tls_expired")
    assert f"certificate for {NAME} expired 3 days ago" in (obs.error or "")
    assert obs.tls_expiry_ms == expiry_ms(servers, "expired")


async def test_expired_shows_even_when_the_name_is_wrong_too(ctx, servers):
    obs = await run(ctx, servers.spec("expired", server_name="other.test"))
    assert (obs.outcome, obs.error_kind) == ("down", "tls_expired")


async def test_wrong_host_names_the_certificates_names(ctx, servers):
    obs = await run(ctx, servers.spec("valid", server_name="other.test"))
    assert (obs.outcome, obs.error_kind) == ("down", "tls_hostname")
    assert f"not valid for other.test: it names {NAME}, 127.0.0.1" in (obs.error or "")
    assert obs.tls_expiry_ms == expiry_ms(servers, "valid")


async def test_ip_not_in_the_certificate_is_a_hostname_failure(ctx, servers):
    obs = await run(ctx, servers.spec("soon", server_name=None))
    assert (obs.outcome, obs.error_kind) == ("down", "tls_hostname")


@pytest.mark.parametrize(("which", "phrase"), [
    ("self-signed", "self-signed certificate"),
    ("stranger", "unable to get local issuer certificate"),
])
async def test_unknown_issuer_is_untrusted(ctx, servers, which, phrase):
    obs = await run(ctx, servers.spec(which))
    assert (obs.outcome, obs.error_kind) == ("down", "tls_untrusted")
    assert phrase in (obs.error or "")
    assert "expires in" in (obs.error or "")
    assert obs.tls_expiry_ms is not None


async def test_system_trust_store_does_not_know_a_private_ca(ctx, servers):
    obs = await run(ctx, servers.spec("valid", ca_file=None))
    assert (obs.outcome, obs.error_kind) == ("down", "tls_untrusted")


async def test_refused_port_is_a_connect_failure(ctx, servers):
    obs = await run(ctx, servers.spec("refused"))
    assert (obs.outcome, obs.error_kind) == ("down", "connect")
    assert "Connection refused" in (obs.error or "")


async def test_a_server_that_does_not_speak_tls(ctx, servers):
    obs = await run(ctx, servers.spec("not-tls"))
    assert (obs.outcome, obs.error_kind) == ("down", "tls")


async def test_a_handshake_that_never_ends_is_down(ctx, servers):
    # That it ends before the executor's deadline: test_through_the_executor ("tls-silent").
    obs = await run(ctx, servers.spec("silent"), timeout_ms=600)
    assert (obs.outcome, obs.error_kind) == ("down", "tls")
    assert "handshake" in (obs.error or "")


async def test_missing_ca_file_is_an_error_of_the_monitor(ctx, servers, tmp_path):
    obs = await run(ctx, servers.spec("valid", ca_file=str(tmp_path / "nope.pem")))
    assert (obs.outcome, obs.error_kind) == ("error", "spec")
    assert "nope.pem" in (obs.error or "")


async def test_through_the_executor(r, keys, servers):
    settings = Settings(max_timeout_ms=2_000, instance_id="exec-tls")
    dues = [check_due(f"tls-{which}", "tls", servers.spec(which), timeout_ms=800)
            for which in ("valid", "soon", "expired", "self-signed", "refused", "silent")]
    dues.append(check_due("tls-wrong-host", "tls",
                          servers.spec("valid", server_name="other.test"), timeout_ms=800))
    got = await run_checks(r, keys, dues, settings)
    assert got["tls-valid"].outcome == "up"
    assert got["tls-valid"].tls_expiry_ms == expiry_ms(servers, "valid")
    assert (got["tls-soon"].outcome, got["tls-soon"].error_kind) == ("degraded", "tls_expiring")
    assert got["tls-expired"].error_kind == "tls_expired"
    assert got["tls-expired"].tls_expiry_ms == expiry_ms(servers, "expired")
    assert got["tls-self-signed"].error_kind == "tls_untrusted"
    assert got["tls-wrong-host"].error_kind == "tls_hostname"
    assert got["tls-refused"].error_kind == "connect"
    # The handshake deadline ends first: a precise kind, not the executor's timeout.
    assert (got["tls-silent"].outcome, got["tls-silent"].error_kind) == ("down", "tls")
