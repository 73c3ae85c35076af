"""Every check kind, by name: its spec model and its check function."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from engine.events import CheckDue, Observation
from executors import dns, http, icmp, postgres_probe, push, redis_probe, tcp, tls
from executors.base import Context


@dataclass(frozen=True, slots=True)
class Kind:
    spec: type[BaseModel]
    check: Callable[[Any, Context, CheckDue], Awaitable[Observation]]


KINDS: dict[str, Kind] = {
    http.KIND: Kind(http.HttpSpec, http.check),
    tcp.KIND: Kind(tcp.TcpSpec, tcp.check),
    dns.KIND: Kind(dns.DnsSpec, dns.check),
    icmp.KIND: Kind(icmp.IcmpSpec, icmp.check),
    tls.KIND: Kind(tls.TlsSpec, tls.check),
    push.KIND: Kind(push.PushSpec, push.check),
    postgres_probe.KIND: Kind(postgres_probe.PostgresSpec, postgres_probe.check),
    redis_probe.KIND: Kind(redis_probe.RedisSpec, redis_probe.check),
}
