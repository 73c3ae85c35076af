"""The event schemas carried on the streams: orjson, versioned, typed, epoch-ms UTC times."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import orjson

from engine.text import clip

VERSION = 1
CHECK_DUE = "check.due"
CHECK_RESULT = "check.result"

Outcome = Literal["up", "down", "degraded", "error", "expired"]
OUTCOMES: tuple[Outcome, ...] = ("up", "down", "degraded", "error", "expired")


class BadEvent(ValueError):
    """A stream entry that is not a valid event of the expected type and version."""


def check_id(monitor_id: str, region: str, scheduled_ms: int) -> str:
    """Deterministic: every redelivery, claim and retry of one check carries the same id.

    scheduler/dispatch.lua builds the same string.
    """
    return f"{monitor_id}:{region}:{scheduled_ms}"


def _load(raw: bytes | str, expected_type: str) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadEvent(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadEvent("not a JSON object")
    if data.get("type") != expected_type:
        raise BadEvent(f"type is {data.get('type')!r}, expected {expected_type!r}")
    if data.get("v") != VERSION:
        raise BadEvent(f"version is {data.get('v')!r}, this code reads version {VERSION}")
    return data


def _field(data: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise BadEvent(f"field {name!r} is {value!r}, expected {names}")
    return value


def _optional(data: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    return None if data.get(name) is None else _field(data, name, kind)


@dataclass(slots=True)
class CheckDue:
    check_id: str
    monitor_id: str
    region: str
    scheduled_ms: int
    deadline_ms: int
    spec_version: int
    spec: dict[str, Any]
    v: int = VERSION
    type: str = CHECK_DUE

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> CheckDue:
        data = _load(raw, CHECK_DUE)
        return cls(
            check_id=_field(data, "check_id", str),
            monitor_id=_field(data, "monitor_id", str),
            region=_field(data, "region", str),
            scheduled_ms=_field(data, "scheduled_ms", int),
            deadline_ms=_field(data, "deadline_ms", int),
            spec_version=_field(data, "spec_version", int),
            spec=_field(data, "spec", dict),
        )


_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "latency_ms": (int, float), "status_code": int, "error_kind": str, "error": str,
    "tls_expiry_ms": int, "executor": str, "deliveries": int,
}


@dataclass(slots=True, kw_only=True)
class Observation:
    """What a check saw; a CheckResult adds the check's identity, times and executor."""

    outcome: Outcome
    latency_ms: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    status_code: int | None = None
    error_kind: str | None = None
    error: str | None = None
    tls_expiry_ms: int | None = None


@dataclass(slots=True, kw_only=True)
class CheckResult(Observation):
    check_id: str
    monitor_id: str
    region: str
    scheduled_ms: int
    started_ms: int
    finished_ms: int
    executor: str = ""
    deliveries: int = 1
    v: int = VERSION
    type: str = CHECK_RESULT

    @classmethod
    def of(cls, due: CheckDue, obs: Observation, *, started_ms: int, finished_ms: int,
           executor: str, deliveries: int) -> CheckResult:
        seen = {f.name: getattr(obs, f.name) for f in fields(Observation)}
        # The one place every error text passes through: its bound is kept here.
        if obs.error is not None:
            seen["error"] = clip(obs.error)
        return cls(check_id=due.check_id, monitor_id=due.monitor_id, region=due.region,
                   scheduled_ms=due.scheduled_ms, started_ms=started_ms, finished_ms=finished_ms,
                   executor=executor, deliveries=deliveries, **seen)

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> CheckResult:
        data = _load(raw, CHECK_RESULT)
        if data.get("outcome") not in OUTCOMES:
            raise BadEvent(f"field 'outcome' is {data.get('outcome')!r}, expected one of "
                           + ", ".join(OUTCOMES))
        for name in ("check_id", "monitor_id", "region"):
            _field(data, name, str)
        for name in ("scheduled_ms", "started_ms", "finished_ms"):
            _field(data, name, int)
        # Optional fields are checked too: a mistyped one must not reach a sink's insert.
        for name, kind in _OPTIONAL.items():
            _optional(data, name, kind)
        phases = data.get("phases", {})
        if not isinstance(phases, dict) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in phases.values()):
            raise BadEvent(f"field 'phases' is {phases!r}, expected an object of numbers")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
