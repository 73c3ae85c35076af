"""DNS checks against a real authoritative server on 127.0.0.1, and one that never answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine.events import Observation
from engine.monitors import SpecError
from engine.settings import Settings
from executors.base import Context
from executors.kinds import SCHEMA, dns
from tests.support.dns_server import DnsServer, SilentServer
from tests.support.kind_executor import check_due, observe, run_checks


@pytest.fixture(scope="module")
async def zone() -> AsyncIterator[DnsServer]:
    server = await DnsServer().start()
    yield server
    server.stop()


@pytest.fixture
async def silent() -> AsyncIterator[SilentServer]:
    server = await SilentServer().start()
    yield server
    server.stop()


async def run(ctx: Context, spec: dict[str, Any], timeout_ms: int = 2_000) -> Observation:
    return await observe(ctx, "dns", spec, timeout_ms)


def at(server: DnsServer | SilentServer, name: str, **spec: Any) -> dict[str, Any]:
    return {"name": name, "nameserver": server.host, "port": server.port, **spec}


@pytest.mark.parametrize(("spec", "phrase"), [
    ({"name": "a.test", "record_type": "SRV"}, "dns.record_type"),
    ({"name": "a.test", "expect": ["not-an-ip"]}, "is not an IP address"),
    ({"name": "a.test", "record_type": "AAAA", "expect": ["192.0.2.1"]}, "not an IPv6 address"),
    ({"name": "a.test", "record_type": "MX", "expect": ["ten mail.test"]}, "not an MX value"),
    ({"name": "a..test"}, "not a valid DNS name"),
    ({"name": "a.test", "nameserver": "ns.example"}, "dns.nameserver"),
    ({"name": "a.test", "port": 0}, "dns.port"),
    ({"name": "a.test", "server": "1.1.1.1"}, "dns.server"),
    ({}, "dns.name"),
])
def test_invalid_specs_name_the_field_and_the_reason(spec, phrase):
    with pytest.raises(SpecError) as err:
        SCHEMA.parse([{"id": "d", "kind": "dns", "dns": spec}])
    assert phrase in str(err.value)


def test_spec_defaults_and_case():
    spec = dns.DnsSpec.model_validate({"name": "example.test", "record_type": "aaaa"})
    assert (spec.record_type, spec.nameserver, spec.port, spec.expect) == ("AAAA", None, 53, [])
    assert dns.DnsSpec.model_validate({"name": "x.test"}).record_type == "A"


@pytest.mark.parametrize(("spec", "expect"), [
    ({"name": "www.example.test"}, ["192.0.2.10", "192.0.2.11"]),
    ({"name": "www.example.test."}, ["192.0.2.11"]),
    ({"name": "WWW.Example.Test", "record_type": "AAAA"}, ["2001:0db8:0::0010"]),
    ({"name": "alias.example.test", "record_type": "CNAME"}, ["WWW.example.test."]),
    ({"name": "alias.example.test"}, ["192.0.2.10"]),  # an A query follows the CNAME
    ({"name": "example.test", "record_type": "MX"},
     ["10 mail.example.test", "backup.example.test"]),
    ({"name": "example.test", "record_type": "MX"}, ["20 backup.example.test."]),
    ({"name": "example.test", "record_type": "NS"}, ["ns1.example.test", "NS2.example.test."]),
    ({"name": "example.test", "record_type": "TXT"}, ["v=spf1 -all", '"hello world"']),
    ({"name": "example.test", "record_type": "TXT"}, []),
])
async def test_up_when_every_expected_value_is_answered(ctx, zone, spec, expect):
    obs = await run(ctx, at(zone, **spec, expect=expect))
    assert obs.outcome == "up", obs.error
    assert obs.latency_ms is not None
    assert obs.phases == {"dns": obs.latency_ms}


@pytest.mark.parametrize(("spec", "missing"), [
    ({"name": "www.example.test", "expect": ["192.0.2.10", "192.0.2.99"]}, "192.0.2.99"),
    ({"name": "example.test", "record_type": "MX", "expect": ["30 mail.example.test"]},
     "30 mail.example.test"),
    ({"name": "example.test", "record_type": "TXT", "expect": ["V=SPF1 -ALL"]}, "V=SPF1 -ALL"),
])
async def test_mismatch_names_what_was_expected_and_what_came(ctx, zone, spec, missing):
    obs = await run(ctx, at(zone, **spec))
    assert (obs.outcome, obs.error_kind) == ("down", "mismatch")
    assert obs.error is not None
    assert f"missing {missing};" in obs.error
    assert "got " in obs.error
    if spec.get("record_type", "A") == "A":
        assert "got 192.0.2.10, 192.0.2.11" in obs.error
    if spec.get("record_type") == "MX":
        assert "10 mail.example.test, 20 backup.example.test" in obs.error


async def test_ipv6_nameserver(ctx):
    server = await DnsServer(host="::1").start()
    try:
        obs = await run(ctx, at(server, "www.example.test", expect=["192.0.2.10"]))
        assert obs.outcome == "up", obs.error
        obs = await run(ctx, at(server, "www.example.test", expect=["192.0.2.1"]))
        assert f"at [::1]:{server.port}: missing 192.0.2.1;" in (obs.error or "")
    finally:
        server.stop()


async def test_nxdomain(ctx, zone):
    obs = await run(ctx, at(zone, "nope.example.test"))
    assert (obs.outcome, obs.error_kind) == ("down", "nxdomain")
    assert "nope.example.test A" in (obs.error or "")


async def test_no_answer_for_a_name_without_that_type(ctx, zone):
    obs = await run(ctx, at(zone, "mail.example.test", record_type="AAAA"))
    assert (obs.outcome, obs.error_kind) == ("down", "no_answer")


async def test_servfail_is_its_own_kind(ctx, zone):
    obs = await run(ctx, at(zone, "broken.example.test"))
    assert (obs.outcome, obs.error_kind) == ("down", "servfail")
    assert "SERVFAIL" in (obs.error or "")


async def test_silent_nameserver_is_down_and_stalls_nothing(ctx, zone, silent):
    # That it ends before the executor's deadline: test_through_the_executor ("dns-silent").
    finished: list[str] = []

    async def ordered(label: str, spec: dict[str, Any]) -> Observation:
        obs = await run(ctx, spec, timeout_ms=600)
        finished.append(label)
        return obs

    lost, found = await asyncio.gather(
        ordered("silent", at(silent, "www.example.test")),
        ordered("zone", at(zone, "www.example.test")))
    assert (lost.outcome, lost.error_kind) == ("down", "dns_timeout")
    assert "no answer within 540 ms" in (lost.error or "")
    assert found.outcome == "up"
    assert finished == ["zone", "silent"]
    assert silent.queries >= 1


async def test_through_the_executor(r, keys, zone, silent):
    settings = Settings(max_timeout_ms=2_000, instance_id="exec-dns")
    dues = [
        check_due("dns-up", "dns", at(zone, "www.example.test", expect=["192.0.2.10"]),
                  timeout_ms=800),
        check_due("dns-mx", "dns", at(zone, "example.test", record_type="MX",
                                      expect=["mail.example.test"]), timeout_ms=800),
        check_due("dns-nx", "dns", at(zone, "gone.example.test"), timeout_ms=800),
        check_due("dns-silent", "dns", at(silent, "www.example.test"), timeout_ms=800),
        check_due("dns-bad", "dns", {"name": "x.test", "record_type": "PTR"}, timeout_ms=800),
    ]
    got = await run_checks(r, keys, dues, settings)
    assert got["dns-up"].outcome == "up"
    assert got["dns-up"].phases["dns"] == got["dns-up"].latency_ms
    assert got["dns-mx"].outcome == "up"
    assert (got["dns-nx"].outcome, got["dns-nx"].error_kind) == ("down", "nxdomain")
    # The resolver's own lifetime ends first: a precise kind, not the executor's timeout.
    assert (got["dns-silent"].outcome, got["dns-silent"].error_kind) == ("down", "dns_timeout")
    assert (got["dns-bad"].outcome, got["dns-bad"].error_kind) == ("error", "spec")
    assert "dns.record_type" in (got["dns-bad"].error or "")
