"""The evaluation itself, as a pure function: a monitor's state, its rules and one result in,
the new state and the events of its transitions out. No I/O and no clock, so the live
evaluator (evaluator.service), a re-evaluation after a conflict and `vigil replay` all get the
same events, with the same ids, from the same results.

Per region: the run of equal raw outcomes (its class and length) turns into a confirmed
status once it is `confirm_down` (down, degraded) or `confirm_up` (up) long. A region whose
results stop is `unknown` once `stale_after` has passed since its last one; it does not vote.
Per monitor: `quorum` regions agreeing give its status; fewer than `quorum` fresh regions
give `unknown` and a `monitoring.degraded` event (never a false outage); enough regions that
do not agree keep the status it has. More than
`flap_changes` changes of that status within `flap_window` give `flapping`, alerted once;
it ends when a window passes without a change. An incident opens when the monitor's status
becomes down (not from a result inside a muted maintenance window: the first result after
the window opens it then) and resolves when it is up again; flapping and unknown keep it
open. A dependency down when the incident opens folds it into the dependency's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from engine.events import (
    INCIDENT_OPENED,
    INCIDENT_RESOLVED,
    MONITOR_CHANGED,
    MONITORING_DEGRADED,
    MONITORING_RESTORED,
    STATUS_CHANGED,
    CheckResult,
    Event,
    Status,
    event_id,
)
from engine.rules import Rules

# What each raw outcome counts as; `expired` says nothing about the target and is skipped.
CLASS_OF: dict[str, Status] = {"up": "up", "degraded": "degraded", "down": "down",
                               "error": "down"}
# The statuses whose changes count towards flapping (unknown is about Vigil, not the target).
TARGET_STATUSES = ("up", "down", "degraded")


@dataclass(slots=True)
class Region:
    status: Status = "unknown"
    run: Status | None = None  # the class of the current run of results
    length: int = 0
    last_ms: int = -1  # scheduled_ms of the newest result evaluated
    fresh_ms: int = -1  # staleness counts from here: the newest result, or a pause seen
    bad_check: str | None = None  # the first result of the current run that was not up
    bad_ms: int | None = None
    retries: int = 0  # extra checks sent in the current failing run
    error_kind: str | None = None
    error: str | None = None


@dataclass(slots=True)
class Incident:
    id: str
    opened_ms: int
    first_check_id: str | None
    folded_into: str | None
    regions: list[str]
    # Folded: results since no dependency is down any more. After confirm_down of them, still
    # down, it is an outage of its own: resolved as folded and opened anew, to be notified.
    clear: int = 0


@dataclass(slots=True)
class MonitorState:
    rev: int = 0
    regions: dict[str, Region] = field(default_factory=dict)
    status: Status = "unknown"  # as published: the quorum status, or flapping
    quorum: Status = "unknown"  # the status the regions' votes give
    changes: list[int] = field(default_factory=list)  # at_ms of recent quorum changes
    incident: Incident | None = None
    blind: bool = False  # monitoring.degraded raised and not restored

    def to_json(self) -> bytes:
        return orjson.dumps(self)  # orjson writes dataclasses itself, nested ones too

    @classmethod
    def from_json(cls, raw: bytes | str) -> MonitorState:
        data: dict[str, Any] = orjson.loads(raw)
        incident = data.pop("incident")
        regions = data.pop("regions")
        return cls(**data, regions={name: Region(**r) for name, r in regions.items()},
                   incident=Incident(**incident) if incident else None)


@dataclass(frozen=True, slots=True)
class Dependency:
    """What a dependency's own state says when an incident opens."""

    status: Status
    incident_id: str | None


@dataclass(slots=True)
class Step:
    """What one evaluation produced: the events, in order, and an extra check to send
    (`retry_at_ms`, for the result's region) when the rules ask for one."""

    events: list[Event] = field(default_factory=list)
    retry_at_ms: int | None = None


def _vote(rules: Rules, regions: dict[str, Region], current: Status) -> Status:
    """The monitor's status the regions' votes give: `quorum` of them agreeing; `unknown`
    when fewer than `quorum` can vote; and when enough vote but too few agree (eu down, us
    up, quorum 2: one region's result in before the other's of the same slot, or a real
    split), the status it has, as hysteresis would: no flap through unknown, no guess."""
    voters = [regions[name].status for name in rules.regions
              if name in regions and regions[name].status != "unknown"]
    if len(voters) < rules.quorum:
        return "unknown"
    down = voters.count("down")
    if down >= rules.quorum:
        return "down"
    if down + voters.count("degraded") >= rules.quorum:
        return "degraded"
    if voters.count("up") >= rules.quorum:
        return "up"
    return current


class Evaluation:
    """One monitor's state moved by results and by time; collects the events."""

    def __init__(self, monitor_id: str, state: MonitorState, rules: Rules,
                 dependencies: dict[str, Dependency] | None = None) -> None:
        self.monitor_id = monitor_id
        self.state = state
        self.rules = rules
        self.dependencies = dependencies or {}
        self.step = Step()
        # What the events about to be emitted are caused by: (region, at ms, by staleness).
        self._cause: tuple[str, int, bool] = ("", 0, False)
        # Regions the rules no longer name leave the state (and never vote).
        for name in [n for n in state.regions if n not in rules.regions]:
            del state.regions[name]
        for name in rules.regions:
            state.regions.setdefault(name, Region())

    def _emit(self, event_type: str, at_ms: int, region: str | None = None,
              **fields: Any) -> Event:
        event = Event(type=event_type, id=event_id(event_type, self.monitor_id, *self._cause),
                      monitor_id=self.monitor_id, at_ms=at_ms, region=region, **fields)
        self.step.events.append(event)
        return event

    def _regions(self) -> dict[str, Status]:
        return {name: self.state.regions[name].status for name in self.rules.regions}

    def expire(self, now_ms: int) -> None:
        """Regions whose results stopped before `now_ms` turn unknown, each at the time it
        went stale, oldest first, and the monitor is re-voted after each."""
        while True:
            stale = [(r.fresh_ms + self.rules.stale_after_ms, name)
                     for name, r in self.state.regions.items()
                     if r.status != "unknown" and r.fresh_ms >= 0
                     and r.fresh_ms + self.rules.stale_after_ms < now_ms]
            if not stale:
                return
            at_ms, name = min(stale)
            self._cause = (name, at_ms, True)
            region = self.state.regions[name]
            self._emit(STATUS_CHANGED, at_ms, name, status="unknown", previous=region.status)
            region.status = "unknown"
            self._revote(at_ms, None, maintenance=False)

    def paused(self, now_ms: int) -> None:
        """Inside a paused maintenance window no results come, and none are missing: the
        staleness of every region counts from `now_ms`."""
        for region in self.state.regions.values():
            region.fresh_ms = max(region.fresh_ms, now_ms)

    def result(self, result: CheckResult) -> None:
        cls = CLASS_OF.get(result.outcome)
        region = self.state.regions.get(result.region)
        if cls is None or region is None or result.scheduled_ms <= region.last_ms:
            return  # expired, a region the monitor no longer has, or older than evaluated
        self.expire(result.scheduled_ms)
        self._cause = (result.region, result.scheduled_ms, False)
        region.last_ms = region.fresh_ms = result.scheduled_ms
        region.error_kind, region.error = result.error_kind, result.error
        if cls == region.run:
            region.length += 1
        else:
            if cls == "up" or region.run in (None, "up"):
                region.bad_check, region.bad_ms = (None, None) if cls == "up" else (
                    result.check_id, result.scheduled_ms)
                region.retries = 0
            region.run, region.length = cls, 1
        needed = self.rules.confirm_up if cls == "up" else self.rules.confirm_down
        if region.length >= needed and region.status != cls:
            self._emit(STATUS_CHANGED, result.scheduled_ms, result.region, status=cls,
                       previous=region.status, check_id=result.check_id,
                       maintenance=result.maintenance, error_kind=result.error_kind,
                       error=result.error)
            region.status = cls
            self._revote(result.scheduled_ms, result, maintenance=result.maintenance)
        elif (cls != "up" and region.status != cls and self.rules.retry_interval_ms
              and region.retries < self.rules.retries):
            region.retries += 1
            self.step.retry_at_ms = result.scheduled_ms + self.rules.retry_interval_ms
        self._settle(result.scheduled_ms, result, maintenance=result.maintenance)

    def _revote(self, at_ms: int, result: CheckResult | None, maintenance: bool) -> None:
        state = self.state
        vote = _vote(self.rules, state.regions, state.quorum)
        if vote == state.quorum:
            return
        previous, state.quorum = state.quorum, vote
        if vote == "unknown":
            if previous != "unknown" and not state.blind:
                state.blind = True
                self._emit(MONITORING_DEGRADED, at_ms, regions=self._regions(),
                           status="unknown", previous=previous, maintenance=maintenance)
        elif state.blind:
            state.blind = False
            self._emit(MONITORING_RESTORED, at_ms, regions=self._regions(), status=vote,
                       maintenance=maintenance)
        if previous in TARGET_STATUSES and vote in TARGET_STATUSES:
            window_start = at_ms - self.rules.flap_window_ms
            state.changes = [t for t in state.changes if t > window_start] + [at_ms]
        if state.status == "flapping":
            return  # published again when the flapping ends (_settle)
        if len(state.changes) > self.rules.flap_changes:
            self._publish("flapping", at_ms, result, maintenance)
        else:
            self._publish(vote, at_ms, result, maintenance)

    def _publish(self, status: Status, at_ms: int, result: CheckResult | None,
                 maintenance: bool) -> None:
        if status == self.state.status:
            return
        self._emit(MONITOR_CHANGED, at_ms, status=status, previous=self.state.status,
                   regions=self._regions(), check_id=result.check_id if result else None,
                   maintenance=maintenance)
        self.state.status = status

    def _settle(self, at_ms: int, result: CheckResult, maintenance: bool) -> None:
        """After every result: flapping ends once a window passed without a change; an
        incident opens on down (not inside a muted window) and resolves on up."""
        state = self.state
        if state.status == "flapping" and (
                not state.changes or state.changes[-1] <= at_ms - self.rules.flap_window_ms):
            state.changes = []
            self._publish(state.quorum, at_ms, result, maintenance)
        incident = state.incident
        if state.status == "down" and incident is None and not maintenance:
            self._open(at_ms)
        elif state.status == "up" and incident is not None:
            self._resolve(at_ms, result)
        elif state.status == "down" and incident is not None and incident.folded_into:
            if self._dependency_down():
                incident.clear = 0
                return
            incident.clear += 1
            if incident.clear >= self.rules.confirm_down and not maintenance:
                self._resolve(at_ms, result, "its dependency recovered; it is still down")
                self._open(at_ms)

    def _dependency_down(self) -> str | None:
        """The incident (or id) of the first dependency that is down, if one is."""
        return next((dep.incident_id or dep_id for dep_id, dep in
                     sorted(self.dependencies.items()) if dep.status == "down"), None)

    def _resolve(self, at_ms: int, result: CheckResult, reason: str | None = None) -> None:
        incident, self.state.incident = self.state.incident, None
        assert incident is not None
        self._emit(INCIDENT_RESOLVED, at_ms, incident_id=incident.id,
                   opened_ms=incident.opened_ms, resolved_ms=at_ms,
                   first_check_id=incident.first_check_id, folded_into=incident.folded_into,
                   regions=self._regions(), check_id=result.check_id, reason=reason)

    def _open(self, at_ms: int) -> None:
        down = {name: r for name, r in self.state.regions.items() if r.status == "down"}
        first = min(down.values(), key=lambda r: (r.bad_ms is None, r.bad_ms or 0),
                    default=None)
        folded = self._dependency_down()
        incident = Incident(id=f"{self.monitor_id}:{at_ms}", opened_ms=at_ms,
                            first_check_id=first.bad_check if first else None,
                            folded_into=folded, regions=sorted(down))
        self.state.incident = incident
        self._emit(INCIDENT_OPENED, at_ms, incident_id=incident.id, opened_ms=at_ms,
                   first_check_id=incident.first_check_id, folded_into=folded,
                   regions=self._regions(),
                   error_kind=first.error_kind if first else None,
                   error=first.error if first else None)

    def stale_deadlines(self) -> dict[str, int | None]:
        """Region -> when it goes stale if no result comes (None: unknown already)."""
        return {name: (r.fresh_ms + self.rules.stale_after_ms
                       if r.status != "unknown" and r.fresh_ms >= 0 else None)
                for name, r in self.state.regions.items()}


def retire(monitor_id: str, state: MonitorState, at_ms: int) -> Step:
    """A monitor removed or paused (its rules are gone): its open incident resolves, so every
    alert sent for it gets its resolve; its state starts afresh if it comes back."""
    step = Step()
    if state.incident is not None:
        incident = state.incident
        step.events.append(Event(
            type=INCIDENT_RESOLVED, id=event_id(INCIDENT_RESOLVED, monitor_id, "retired", at_ms),
            monitor_id=monitor_id, at_ms=at_ms, incident_id=incident.id,
            opened_ms=incident.opened_ms, resolved_ms=at_ms,
            first_check_id=incident.first_check_id, folded_into=incident.folded_into,
            reason="the monitor was removed or paused"))
    return step


def evaluate(monitor_id: str, state: MonitorState, rules: Rules, result: CheckResult,
             dependencies: dict[str, Dependency] | None = None) -> Step:
    """Move `state` (in place) by one result; the events and the retry it asks for."""
    evaluation = Evaluation(monitor_id, state, rules, dependencies)
    evaluation.result(result)
    return evaluation.step
