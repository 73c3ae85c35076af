"""ICMP ping checks: `count` echo requests, `interval_ms` apart; all lost is `down`, a loss
above `max_loss_percent` is `degraded`. latency_ms is the average round trip.

Unprivileged ICMP sockets come first: the kernel hands each one only its own replies, where
every raw socket sees every ICMP packet on the host, which costs O(checks^2) under load.
Raw sockets are the fallback for a root or CAP_NET_RAW executor on a kernel whose
net.ipv4.ping_group_range excludes it.
"""

from __future__ import annotations

import icmplib
from pydantic import Field

from engine.events import CheckDue, Observation
from engine.resolver import ResolveError
from executors.base import Context, Host, Kind, Spec, budget_s, down, failed

# Every reply is awaited for at most its share of this part of the monitor's timeout, so a
# silent host ends as a precise `unreachable` instead of the executor's generic `timeout`.
MIN_REPLY_WAIT_S = 0.05
PERMISSION_HINT = (
    "the kernel refused an ICMP socket: allow unprivileged ping with "
    "`sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"` or run the executor with "
    "CAP_NET_RAW"
)


class IcmpSpec(Spec):

    host: Host
    count: int = Field(default=3, ge=1, le=100)
    interval_ms: int = Field(default=200, ge=10, le=10_000)
    max_loss_percent: float = Field(default=0, ge=0, le=100)


async def ping(address: str, count: int, interval_s: float, reply_wait_s: float) -> icmplib.Host:
    """Unprivileged first, raw socket second; SocketPermissionError when neither is allowed."""
    try:
        return await icmplib.async_ping(address, count=count, interval=interval_s,
                                        timeout=reply_wait_s, privileged=False)
    except icmplib.SocketPermissionError:
        return await icmplib.async_ping(address, count=count, interval=interval_s,
                                        timeout=reply_wait_s, privileged=True)


def judge(spec: IcmpSpec, host: icmplib.Host) -> Observation:
    """The outcome of one ping run: all lost is down, loss above the threshold degraded."""
    if host.packets_received == 0:
        return down("unreachable", f"{spec.host}: no reply to {spec.count} echo requests "
                                   "(100% packet loss)")
    phases = {"rtt_min": host.min_rtt, "rtt_max": host.max_rtt}
    loss = host.packet_loss * 100
    if loss > spec.max_loss_percent:
        lost = host.packets_sent - host.packets_received
        return Observation(outcome="degraded", latency_ms=host.avg_rtt, phases=phases,
                           error_kind="packet_loss",
                           error=f"{spec.host}: {lost} of {host.packets_sent} packets lost "
                                 f"({loss:.0f}% packet loss, at most "
                                 f"{spec.max_loss_percent:g}% allowed)")
    return Observation(outcome="up", latency_ms=host.avg_rtt, phases=phases)


async def check(spec: IcmpSpec, ctx: Context, due: CheckDue) -> Observation:
    interval_s = spec.interval_ms / 1000
    # Worst case: every request waits out its reply, plus the pauses between requests.
    reply_wait_s = (budget_s(due) - (spec.count - 1) * interval_s) / spec.count
    if reply_wait_s < MIN_REPLY_WAIT_S:
        return failed("spec", f"{spec.count} pings {spec.interval_ms} ms apart do not fit in "
                              "the monitor's timeout; lower count or interval_ms")
    try:
        # No port: only rules for whole networks apply to a ping (engine.guard).
        addresses, _ = await ctx.guard.resolve(ctx.resolver, spec.host, None)
    except ResolveError as exc:
        return down("dns", str(exc))
    try:
        # The checked address, never the name: icmplib would resolve it again.
        host = await ping(addresses[0][1], spec.count, interval_s, reply_wait_s)
    except icmplib.SocketPermissionError:
        return failed("icmp_permission", PERMISSION_HINT)
    except icmplib.ICMPLibError as exc:
        # Only socket set-up raises here (icmplib counts a failed send as a lost packet):
        # a fault of this executor's host, not of the target.
        return failed("icmp", f"{type(exc).__name__}: {exc}")
    return judge(spec, host)


KIND = Kind("icmp", IcmpSpec, check)
