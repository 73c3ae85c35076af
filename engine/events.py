"""The event schemas carried on the streams: orjson, versioned, typed, epoch-ms UTC times."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import orjson

from engine.text import clip

CHECK_DUE = "check.due"
CHECK_RESULT = "check.result"
# Each event type is versioned on its own: a reader refuses (dead-letters) a version it does
# not know rather than misread it. check.due 2 carries kind, interval and timeout as fields.
DUE_VERSION = 2
RESULT_VERSION = 1
# Where a plan's template holds the slot and the deadline (scheduler/dispatch.lua fills them
# in): control bytes orjson never writes (it escapes them in strings), so no value can hold one.
SLOT_MARK = b"\x01"
DEADLINE_MARK = b"\x02"
# Where it holds the `maintenance` flag: the script writes `true` inside a muted maintenance
# window (engine.maintenance, Keys.maintenance), `false` otherwise.
MAINTENANCE_MARK = b"\x03"

Outcome = Literal["up", "down", "degraded", "error", "expired"]
OUTCOMES: tuple[Outcome, ...] = ("up", "down", "degraded", "error", "expired")


class BadEvent(ValueError):
    """A stream entry that is not a valid event of the expected type and version."""


def check_id(monitor_id: str, region: str, scheduled_ms: int | str) -> str:
    """Deterministic: every redelivery, claim and retry of one check carries the same id.
    (`scheduled_ms` is text only in CheckDue.template, where it is the slot's mark.)"""
    return f"{monitor_id}:{region}:{scheduled_ms}"


def _load(raw: bytes | str, expected_type: str, version: int) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadEvent(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadEvent("not a JSON object")
    if data.get("type") != expected_type:
        raise BadEvent(f"type is {data.get('type')!r}, expected {expected_type!r}")
    if data.get("v") != version:
        raise BadEvent(f"version is {data.get('v')!r}, this code reads version {version}")
    return data


def _field(data: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(name)
    # A bool is an int to isinstance: only a bool field takes one.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise BadEvent(f"field {name!r} is {value!r}, expected {names}")
    return value


def _optional(data: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    return None if data.get(name) is None else _field(data, name, kind)


@dataclass(slots=True, kw_only=True)
class CheckDue:
    """One check to run: everything an executor needs, so it reads nothing else. `spec` is the
    kind's own settings as stored (what sits under `http:` in a definition)."""

    check_id: str
    monitor_id: str
    region: str
    scheduled_ms: int
    deadline_ms: int
    interval_ms: int
    timeout_ms: int
    spec_version: int
    kind: str
    spec: dict[str, Any]
    # Dispatched inside a muted maintenance window (engine.maintenance): run and recorded,
    # flagged, and never the cause of an incident or a notification.
    maintenance: bool = False
    v: int = DUE_VERSION
    type: str = CHECK_DUE

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @property
    def critical(self) -> bool:
        """A critical monitor's spec says `"critical": true`: an executor that is behind runs
        its checks first (executors.admission)."""
        return self.spec.get("critical") is True

    @property
    def kind_spec(self) -> dict[str, Any]:
        """The spec without the monitor's `critical` mark: the kind's own settings, which its
        model validates (and which know no `critical`)."""
        if "critical" not in self.spec:
            return self.spec
        return {k: v for k, v in self.spec.items() if k != "critical"}

    @classmethod
    def template(cls, *, monitor_id: str, region: str, interval_ms: int, timeout_ms: int,
                 spec_version: int, kind: str, spec_json: bytes) -> bytes:
        """The event of every slot of one monitor in one region, rendered once when its plan
        is compiled: SLOT_MARK stands where the slot goes (in check_id and scheduled_ms),
        DEADLINE_MARK for the deadline (slot + interval), MAINTENANCE_MARK for the flag; the
        dispatch script replaces the marks and touches nothing else. `spec_json` goes in as it
        is (Postgres's JSON text)."""
        # Ids and regions are validated ([A-Za-z0-9_.-]), so the id's JSON holds the mark as
        # its only escape.
        marked_id = orjson.dumps(check_id(monitor_id, region, SLOT_MARK.decode())).replace(
            b"\\u0001", SLOT_MARK)
        slots: Any = {"check_id": orjson.Fragment(marked_id),
                      "scheduled_ms": orjson.Fragment(SLOT_MARK),
                      "deadline_ms": orjson.Fragment(DEADLINE_MARK),
                      "maintenance": orjson.Fragment(MAINTENANCE_MARK),
                      "spec": orjson.Fragment(spec_json)}
        return orjson.dumps(cls(monitor_id=monitor_id, region=region, interval_ms=interval_ms,
                                timeout_ms=timeout_ms, spec_version=spec_version, kind=kind,
                                **slots))

    @classmethod
    def from_json(cls, raw: bytes | str) -> CheckDue:
        data = _load(raw, CHECK_DUE, DUE_VERSION)
        return cls(
            check_id=_field(data, "check_id", str),
            monitor_id=_field(data, "monitor_id", str),
            region=_field(data, "region", str),
            scheduled_ms=_field(data, "scheduled_ms", int),
            deadline_ms=_field(data, "deadline_ms", int),
            interval_ms=_field(data, "interval_ms", int),
            timeout_ms=_field(data, "timeout_ms", int),
            spec_version=_field(data, "spec_version", int),
            kind=_field(data, "kind", str),
            spec=_field(data, "spec", dict),
            maintenance=_optional(data, "maintenance", bool) or False,
        )


_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "latency_ms": (int, float), "status_code": int, "error_kind": str, "error": str,
    "tls_expiry_ms": int, "executor": str, "deliveries": int, "maintenance": bool,
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


# What a result takes from its observation, named once (dataclasses.fields per check cost
# more than the copy).
_OBSERVED = tuple(f.name for f in fields(Observation))


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
    maintenance: bool = False
    v: int = RESULT_VERSION
    type: str = CHECK_RESULT

    @classmethod
    def of(cls, due: CheckDue, obs: Observation, *, started_ms: int, finished_ms: int,
           executor: str, deliveries: int) -> CheckResult:
        seen = {name: getattr(obs, name) for name in _OBSERVED}
        # The one place every error text passes through: its bound is kept here.
        if obs.error is not None:
            seen["error"] = clip(obs.error)
        return cls(check_id=due.check_id, monitor_id=due.monitor_id, region=due.region,
                   scheduled_ms=due.scheduled_ms, started_ms=started_ms, finished_ms=finished_ms,
                   executor=executor, deliveries=deliveries, maintenance=due.maintenance,
                   **seen)

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> CheckResult:
        data = _load(raw, CHECK_RESULT, RESULT_VERSION)
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


# --- evaluation events (evaluator.service writes them, engine.keys.EVENT_GROUPS read them) ---

EVENT_VERSION = 1
STATUS_CHANGED = "status.changed"  # one region's confirmed status
MONITOR_CHANGED = "monitor.changed"  # the monitor's status over its regions (the quorum)
INCIDENT_OPENED = "incident.opened"
INCIDENT_RESOLVED = "incident.resolved"
MONITORING_DEGRADED = "monitoring.degraded"  # too few regions can vote: the status is unknown
MONITORING_RESTORED = "monitoring.restored"  # enough can again
EVENT_TYPES = (STATUS_CHANGED, MONITOR_CHANGED, INCIDENT_OPENED, INCIDENT_RESOLVED,
               MONITORING_DEGRADED, MONITORING_RESTORED)
Status = Literal["up", "down", "degraded", "unknown", "flapping"]
STATUSES: tuple[Status, ...] = ("up", "down", "degraded", "unknown", "flapping")


def event_id(event_type: str, monitor_id: str, region: str, at_ms: int,
             stale: bool = False) -> str:
    """Deterministic: the transition's type and monitor, and its cause: the result that
    caused it (its region and `scheduled_ms`, which is its check id), or the region that went
    stale and when (`stale`). A cause gives at most one event of each type, so a redelivered
    or re-evaluated result can only ever name the same events; the notifier's idempotency
    keys derive from them."""
    return f"{event_type}:{monitor_id}:{region}:{at_ms}" + (":stale" if stale else "")


@dataclass(slots=True, kw_only=True)
class Event:
    """One transition. `at_ms` is the `scheduled_ms` of the result that caused it (for a
    region gone stale: when it went stale); `check_id` that result's, when there is one.

    - status.changed: `region`, its `status` and `previous`.
    - monitor.changed: `status`, `previous`, `regions` (each region's status after it).
    - incident.opened / incident.resolved: `incident_id` (`monitor id:opened at ms`),
      `opened_ms`, `first_check_id` (the first failing result of the run that opened it),
      `regions`; resolved adds `resolved_ms`. `folded_into` names the incident of a
      dependency that was down when this one opened: it is not notified apart, and neither is
      its resolve.
    - monitoring.degraded / monitoring.restored: `regions`, with the stale ones `unknown`.
    `maintenance`: the causing result ran inside a muted maintenance window."""

    type: str
    id: str
    monitor_id: str
    at_ms: int
    region: str | None = None
    status: Status | None = None
    previous: Status | None = None
    regions: dict[str, Status] = field(default_factory=dict)
    check_id: str | None = None
    incident_id: str | None = None
    opened_ms: int | None = None
    resolved_ms: int | None = None
    first_check_id: str | None = None
    folded_into: str | None = None
    maintenance: bool = False
    error_kind: str | None = None
    error: str | None = None
    # Why an incident resolved other than by results: the monitor was removed or paused.
    reason: str | None = None
    v: int = EVENT_VERSION

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Event:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadEvent(f"not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("type") not in EVENT_TYPES:
            raise BadEvent(f"type is {data.get('type') if isinstance(data, dict) else data!r}, "
                           f"expected one of {', '.join(EVENT_TYPES)}")
        return cls._checked(data)

    @classmethod
    def _checked(cls, data: dict[str, Any]) -> Event:
        if data.get("v") != EVENT_VERSION:
            raise BadEvent(f"version is {data.get('v')!r}, this code reads version "
                           f"{EVENT_VERSION}")
        for name in ("id", "monitor_id"):
            _field(data, name, str)
        _field(data, "at_ms", int)
        for name in ("region", "check_id", "incident_id", "first_check_id", "folded_into",
                     "error_kind", "error", "reason"):
            _optional(data, name, str)
        for name in ("opened_ms", "resolved_ms"):
            _optional(data, name, int)
        _optional(data, "maintenance", bool)
        for name in ("status", "previous"):
            if data.get(name) is not None and data[name] not in STATUSES:
                raise BadEvent(f"field {name!r} is {data[name]!r}, expected one of "
                               + ", ".join(STATUSES))
        regions = data.get("regions", {})
        if not isinstance(regions, dict) or not all(v in STATUSES for v in regions.values()):
            raise BadEvent(f"field 'regions' is {regions!r}, expected region -> status")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
