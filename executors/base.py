"""What every check kind shares: the executor-wide context and the failed-check helper.

A kind is a module in this package with `KIND` (its name), a pydantic spec model (defaults
for everything optional, so an invalid monitor is rejected with the kind, the field and the
reason), and `async def check(spec, ctx, due) -> Observation` (`due` is the check.due event:
monitor id, scheduled time, and the compiled spec with `interval_ms` and `timeout_ms`).
The executor runs `check` under the monitor's timeout; a check returns `down` with a precise
`error_kind` for every failure of the target, and raises only for Vigil's own bugs.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from engine.events import Observation
from engine.keys import Keys
from executors.resolver import Resolver


def _unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass(slots=True)
class Context:
    """Opened once per executor and shared by every check it runs. HTTP checks need no session:
    each opens a fresh connection; the resolver caches names for a few seconds."""

    redis: aioredis.Redis
    keys: Keys
    tls_verify: ssl.SSLContext = field(default_factory=ssl.create_default_context)
    tls_noverify: ssl.SSLContext = field(default_factory=_unverified)
    resolver: Resolver = field(default_factory=Resolver)


def down(kind: str, message: str, latency_ms: float | None = None) -> Observation:
    """A failed check: `kind` is the precise error kind (dns, connect, tls, status ...)."""
    return Observation(outcome="down", error_kind=kind, error=message[:500], latency_ms=latency_ms)
