"""What every check kind shares: the observation a check returns and its error type."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.events import Outcome


@dataclass(slots=True)
class Observation:
    """What a check saw; the executor adds the check's identity and times."""

    outcome: Outcome
    latency_ms: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    status_code: int | None = None
    error_kind: str | None = None
    error: str | None = None
    tls_expiry_ms: int | None = None


def down(kind: str, message: str, latency_ms: float | None = None) -> Observation:
    return Observation(outcome="down", error_kind=kind, error=message[:500], latency_ms=latency_ms)
