"""What every check kind shares."""

from __future__ import annotations

from engine.events import Observation


def down(kind: str, message: str, latency_ms: float | None = None) -> Observation:
    """A failed check: `kind` is the precise error kind (dns, connect, tls, status ...)."""
    return Observation(outcome="down", error_kind=kind, error=message[:500], latency_ms=latency_ms)
