"""ICMP ping checks against loopback, and the outcome and permission rules on their own.

No local address can be made silent without changing the host (every address in 127/8
answers), so `down` is covered by `judge` on an icmplib Host with no replies.
"""

from __future__ import annotations

from typing import Any

import icmplib
import pytest

from engine.events import Observation
from engine.monitors import SpecError
from engine.settings import Settings
from executors.base import Context
from executors.kinds import SCHEMA, icmp
from tests.support.kind_executor import check_due, observe, run_checks


async def run(ctx: Context, spec: dict[str, Any], timeout_ms: int = 2_000) -> Observation:
    return await observe(ctx, "icmp", spec, timeout_ms)


def test_spec_defaults():
    spec = icmp.IcmpSpec.model_validate({"host": "127.0.0.1"})
    assert (spec.count, spec.interval_ms, spec.max_loss_percent) == (3, 200, 0)


@pytest.mark.parametrize(("spec", "phrase"), [
    ({}, "icmp.host"),
    ({"host": "127.0.0.1", "count": 0}, "icmp.count"),
    ({"host": "127.0.0.1", "max_loss_percent": 120}, "icmp.max_loss_percent"),
    ({"host": "127.0.0.1", "interval_ms": 1}, "icmp.interval_ms"),
    ({"host": "127.0.0.1", "ttl": 3}, "icmp.ttl"),
])
def test_invalid_specs_name_the_field(spec, phrase):
    with pytest.raises(SpecError) as err:
        SCHEMA.parse([{"id": "p", "kind": "icmp", "icmp": spec}])
    assert phrase in str(err.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
async def test_loopback_answers(ctx, host):
    obs = await run(ctx, {"host": host, "count": 3, "interval_ms": 20})
    assert obs.outcome == "up", obs.error
    assert obs.latency_ms is not None
    assert obs.latency_ms > 0
    assert obs.phases["rtt_min"] <= obs.latency_ms <= obs.phases["rtt_max"]


async def test_pings_that_cannot_fit_in_the_timeout_are_a_spec_error(ctx):
    obs = await run(ctx, {"host": "127.0.0.1", "count": 10, "interval_ms": 1_000},
                    timeout_ms=2_000)
    assert (obs.outcome, obs.error_kind) == ("error", "spec")
    assert "count" in (obs.error or "")


def test_no_reply_at_all_is_down():
    spec = icmp.IcmpSpec(host="192.0.2.1")
    obs = icmp.judge(spec, icmplib.Host("192.0.2.1", 3, []))
    assert (obs.outcome, obs.error_kind) == ("down", "unreachable")
    assert "100% packet loss" in (obs.error or "")


def test_nothing_sent_is_down():
    # icmplib counts a send the kernel refused (no route) as not sent.
    obs = icmp.judge(icmp.IcmpSpec(host="192.0.2.1"), icmplib.Host("192.0.2.1", 0, []))
    assert (obs.outcome, obs.error_kind) == ("down", "unreachable")


def test_loss_above_the_threshold_is_degraded():
    host = icmplib.Host("192.0.2.1", 3, [1.0, 3.0])
    obs = icmp.judge(icmp.IcmpSpec(host="192.0.2.1"), host)
    assert (obs.outcome, obs.error_kind) == ("degraded", "packet_loss")
    assert obs.latency_ms == 2.0
    assert obs.phases == {"rtt_min": 1.0, "rtt_max": 3.0}
    assert "1 of 3 packets lost (33% packet loss, at most 0% allowed)" in (obs.error or "")


def test_loss_within_the_threshold_is_up():
    host = icmplib.Host("192.0.2.1", 4, [1.0, 1.0, 1.0])
    assert icmp.judge(icmp.IcmpSpec(host="h", max_loss_percent=25), host).outcome == "up"
    assert icmp.judge(icmp.IcmpSpec(host="h", max_loss_percent=20), host).outcome == "degraded"


async def test_falls_back_to_a_raw_socket_when_unprivileged_ping_is_refused(monkeypatch):
    calls: list[bool] = []
    real = icmplib.async_ping

    async def kernel_refuses_unprivileged(address: str, **kw: Any) -> icmplib.Host:
        calls.append(kw["privileged"])
        if not kw["privileged"]:
            raise icmplib.SocketPermissionError(False)
        return await real(address, **kw)

    monkeypatch.setattr(icmplib, "async_ping", kernel_refuses_unprivileged)
    host = await icmp.ping("127.0.0.1", 1, 0.01, 1.0)
    assert calls == [False, True]
    assert host.packets_received == 1


async def test_refused_sockets_say_what_to_set(ctx, monkeypatch):
    calls: list[bool] = []

    async def kernel_refuses(address: str, **kw: Any) -> icmplib.Host:
        calls.append(kw["privileged"])
        raise icmplib.SocketPermissionError(kw["privileged"])

    monkeypatch.setattr(icmplib, "async_ping", kernel_refuses)
    obs = await run(ctx, {"host": "127.0.0.1"})
    assert calls == [False, True]
    assert (obs.outcome, obs.error_kind) == ("error", "icmp_permission")
    assert 'sysctl -w net.ipv4.ping_group_range="0 2147483647"' in (obs.error or "")
    assert "CAP_NET_RAW" in (obs.error or "")


async def test_through_the_executor(r, keys):
    settings = Settings(max_timeout_ms=2_000, instance_id="exec-icmp")
    dues = [
        check_due("ping-up", "icmp", {"host": "127.0.0.1", "count": 2, "interval_ms": 20},
                  timeout_ms=1_000),
        check_due("ping-unfit", "icmp", {"host": "127.0.0.1", "count": 5, "interval_ms": 500},
                  timeout_ms=1_000),
        check_due("ping-bad", "icmp", {"host": "127.0.0.1", "count": -1}, timeout_ms=1_000),
    ]
    got = await run_checks(r, keys, dues, settings)
    assert got["ping-up"].outcome == "up", got["ping-up"].error
    assert got["ping-up"].phases["rtt_max"] >= got["ping-up"].phases["rtt_min"]
    assert (got["ping-unfit"].outcome, got["ping-unfit"].error_kind) == ("error", "spec")
    assert (got["ping-bad"].outcome, got["ping-bad"].error_kind) == ("error", "spec")
    assert "icmp.count" in (got["ping-bad"].error or "")
