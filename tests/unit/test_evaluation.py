"""The evaluation rules (evaluator.state) on scripted result sequences: hysteresis both ways,
late results, quorum and staleness, monitoring degraded, flapping, incidents across
maintenance and dependencies, retries; and that the events depend on the results alone."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.events import CheckResult, Event
from engine.rules import Rules
from evaluator.state import Dependency, Evaluation, MonitorState, evaluate

INTERVAL = 10_000
RULES = Rules(interval_ms=INTERVAL, regions=("eu",), quorum=1, confirm_down=3, confirm_up=2,
              stale_after_ms=3 * INTERVAL, flap_changes=6, flap_window_ms=3_600_000,
              retry_interval_ms=None, retries=2, depends_on=())


def result(slot: int, outcome: str = "up", region: str = "eu",
           maintenance: bool = False) -> CheckResult:
    at = slot * INTERVAL
    return CheckResult(outcome=outcome, check_id=f"m:{region}:{at}", monitor_id="m",  # type: ignore[arg-type]
                       region=region, scheduled_ms=at, started_ms=at, finished_ms=at + 5,
                       maintenance=maintenance, error="refused" if outcome != "up" else None)


def run(outcomes: list[str | tuple[str, str] | dict[str, str]], rules: Rules = RULES,
        state: MonitorState | None = None) -> tuple[MonitorState, list[Event]]:
    """One slot per item: an outcome (of the first region), (region, outcome), or
    {region: outcome} for several regions at that slot."""
    state = state or MonitorState()
    events: list[Event] = []
    for slot, item in enumerate(outcomes, start=1):
        if isinstance(item, str):
            item = {rules.regions[0]: item}
        elif isinstance(item, tuple):
            item = dict([item])
        for region, outcome in item.items():
            events += evaluate("m", state, rules, result(slot, outcome, region)).events
    return state, events


def kinds(events: list[Event]) -> list[tuple[str, str | None]]:
    return [(e.type, e.status) for e in events]


def test_a_monitor_needs_confirm_up_results_to_be_up_and_confirm_down_to_be_down():
    state, events = run(["up"])
    assert (state.status, events) == ("unknown", [])
    state, events = run(["up", "up", "down", "down"])
    assert state.status == "up"
    assert kinds(events) == [("status.changed", "up"), ("monitor.changed", "up")]
    state, events = run(["up", "up", "down", "down", "down"])
    assert state.status == "down"
    assert kinds(events)[2:] == [("status.changed", "down"), ("monitor.changed", "down"),
                                 ("incident.opened", None)]
    opened = events[-1]
    assert opened.incident_id == f"m:{5 * INTERVAL}"
    assert opened.first_check_id == f"m:eu:{3 * INTERVAL}"  # the first failure of the run
    assert opened.error == "refused"


def test_a_target_failing_every_other_check_never_opens_an_incident():
    rules = replace(RULES, confirm_down=2)
    state, events = run(["up", "up"] + ["down", "up"] * 20, rules)
    assert state.status == "up"
    assert kinds(events) == [("status.changed", "up"), ("monitor.changed", "up")]


def test_a_steady_outage_is_one_incident_opened_and_resolved():
    state, events = run(["up", "up"] + ["down"] * 10 + ["up"] * 3)
    incidents = [e for e in events if e.type.startswith("incident.")]
    assert [e.type for e in incidents] == ["incident.opened", "incident.resolved"]
    resolved = incidents[1]
    assert resolved.incident_id == incidents[0].incident_id
    assert (resolved.opened_ms, resolved.resolved_ms) == (5 * INTERVAL, 14 * INTERVAL)
    assert state.incident is None


def test_a_late_result_enters_no_state():
    state, _ = run(["up", "up", "up"])
    before = state.to_json()
    assert evaluate("m", state, RULES, result(2, "down")).events == []
    assert evaluate("m", state, RULES, result(3, "down")).events == []  # the same slot again
    assert state.to_json() == before


def test_expired_results_say_nothing_about_the_target():
    state, events = run(["up", "up", "expired", "expired", "expired"])
    assert state.status == "up"
    assert len(events) == 2


THREE = replace(RULES, regions=("eu", "us", "ap"), quorum=2)


def test_one_region_down_of_three_is_not_an_outage_two_are():
    ups = [dict.fromkeys(THREE.regions, "up")] * 2
    eu_down = [{"eu": "down", "us": "up", "ap": "up"}] * 3
    state, _ = run(ups + eu_down, THREE)
    assert (state.regions["eu"].status, state.status) == ("down", "up")
    both = [{"eu": "down", "us": "down", "ap": "up"}] * 3
    state, events = run(ups + eu_down + both, THREE)
    assert state.status == "down"
    assert [e.type for e in events][-2:] == ["monitor.changed", "incident.opened"]
    assert events[-1].regions == {"eu": "down", "us": "down", "ap": "up"}


def test_silent_regions_turn_unknown_and_too_few_voters_is_monitoring_degraded():
    state = MonitorState()
    events: list[Event] = []
    slot = 0
    for _ in range(2):
        for region in THREE.regions:
            slot += 1
            events += evaluate("m", state, THREE, result(slot, "up", region)).events
    assert state.status == "up"
    # ap and us go silent; eu keeps answering, so eu alone votes: fewer than the quorum.
    for _ in range(10):
        slot += 1
        events += evaluate("m", state, THREE, result(slot, "up", "eu")).events
    assert {r: s.status for r, s in state.regions.items()} == {"eu": "up", "us": "unknown",
                                                                "ap": "unknown"}
    assert state.status == "unknown"
    degraded = [e for e in events if e.type == "monitoring.degraded"]
    assert len(degraded) == 1
    assert degraded[0].regions["eu"] == "up"
    assert not [e for e in events if e.type == "incident.opened"]
    # us comes back: two voters again.
    for _ in range(2):
        slot += 1
        events += evaluate("m", state, THREE, result(slot, "up", "us")).events
    assert state.status == "up"
    assert [e.type for e in events if e.type.startswith("monitoring.")] == [
        "monitoring.degraded", "monitoring.restored"]


def test_staleness_is_dated_at_the_deadline_not_at_the_sweep():
    state, _ = run(["up", "up"])
    evaluation = Evaluation("m", state, RULES)
    evaluation.expire(10**9)
    changed = evaluation.step.events[0]
    assert (changed.type, changed.status, changed.at_ms) == (
        "status.changed", "unknown", 2 * INTERVAL + RULES.stale_after_ms)
    assert evaluation.stale_deadlines() == {"eu": None}


def test_a_paused_window_is_not_silence():
    state, _ = run(["up", "up"])
    evaluation = Evaluation("m", state, RULES)
    evaluation.paused(10 * INTERVAL)
    evaluation.expire(10 * INTERVAL + 1)
    assert evaluation.step.events == []
    assert evaluation.stale_deadlines() == {"eu": 10 * INTERVAL + RULES.stale_after_ms}


def test_flapping_is_alerted_once_and_ends_after_a_quiet_window():
    rules = replace(RULES, confirm_down=1, confirm_up=1, flap_changes=4,
                    flap_window_ms=20 * INTERVAL)
    state, events = run(["up", "down"] * 6, rules)
    changes = [e.status for e in events if e.type == "monitor.changed"]
    assert changes == ["up", "down", "up", "down", "up", "flapping"]
    assert state.status == "flapping"
    # Each confirmed down before it was an incident; flapping itself opens none.
    assert [e.type for e in events if e.type.startswith("incident.")] == [
        "incident.opened", "incident.resolved", "incident.opened", "incident.resolved"]
    state, more = run(["up", "down"] * 6 + ["up"] * 30, rules)
    assert [e.status for e in more if e.type == "monitor.changed"][-1] == "up"
    assert state.status == "up"
    assert state.incident is None


def test_muted_maintenance_opens_no_incident_until_it_ends():
    state = MonitorState()
    events: list[Event] = []
    for slot in (1, 2):
        events += evaluate("m", state, RULES, result(slot, "up")).events
    for slot in range(3, 8):
        events += evaluate("m", state, RULES, result(slot, "down", maintenance=True)).events
    assert state.status == "down"
    assert not [e for e in events if e.type == "incident.opened"]
    changed = [e for e in events if e.type == "monitor.changed"][-1]
    assert changed.maintenance is True
    after = evaluate("m", state, RULES, result(8, "down")).events
    assert [e.type for e in after] == ["incident.opened"]
    assert after[0].opened_ms == 8 * INTERVAL


def test_a_resolve_is_never_held_back_by_maintenance():
    state, _ = run(["up", "up", "down", "down", "down"])
    assert state.incident is not None
    events = [e for slot in (6, 7)
              for e in evaluate("m", state, RULES, result(slot, "up", maintenance=True)).events]
    assert [e.type for e in events][-1] == "incident.resolved"


def test_an_incident_opened_while_a_dependency_is_down_is_folded_into_it():
    rules = replace(RULES, depends_on=("uplink",))
    state = MonitorState()
    deps = {"uplink": Dependency("down", "uplink:5000")}
    events = [e for slot, outcome in enumerate(["up", "up", "down", "down", "down"], start=1)
              for e in evaluate("m", state, rules, result(slot, outcome), deps).events]
    assert events[-1].type == "incident.opened"
    assert events[-1].folded_into == "uplink:5000"


def folded_then(outcomes: list[str]) -> list[Event]:
    """An incident folded into uplink's, then uplink up and these results."""
    rules = replace(RULES, depends_on=("uplink",))
    state = MonitorState()
    down = {"uplink": Dependency("down", "uplink:5000")}
    for slot, outcome in enumerate(["up", "up", "down", "down", "down"], start=1):
        evaluate("m", state, rules, result(slot, outcome), down)
    up = {"uplink": Dependency("up", None)}
    return [e for slot, outcome in enumerate(outcomes, start=6)
            for e in evaluate("m", state, rules, result(slot, outcome), up).events]


def test_a_folded_incident_still_down_after_its_dependency_recovered_is_its_own():
    events = folded_then(["down", "down", "down"])
    assert [(e.type, e.folded_into) for e in events] == [
        ("incident.resolved", "uplink:5000"), ("incident.opened", None)]
    assert events[0].reason == "its dependency recovered; it is still down"
    assert events[1].at_ms == 8 * INTERVAL  # after confirm_down results with uplink up


def test_a_folded_incident_recovering_with_its_dependency_stays_folded():
    events = folded_then(["down", "up", "up"])
    assert [(e.type, e.folded_into) for e in events if e.type.startswith("incident.")] == [
        ("incident.resolved", "uplink:5000")]


def test_a_failing_region_asks_for_retries_until_confirmed_or_used_up():
    rules = replace(RULES, retry_interval_ms=2_000, retries=2)
    state, _ = run(["up", "up"], rules)
    first = evaluate("m", state, rules, result(3, "down"))
    assert first.retry_at_ms == 3 * INTERVAL + 2_000
    second = evaluate("m", state, rules, replace(result(3, "down"), scheduled_ms=first.retry_at_ms,
                                                 check_id=f"m:eu:{first.retry_at_ms}"))
    assert second.retry_at_ms == first.retry_at_ms + 2_000
    third = evaluate("m", state, rules, replace(result(3, "down"),
                                                scheduled_ms=second.retry_at_ms))
    assert third.retry_at_ms is None  # confirmed down by the third failure
    assert state.status == "down"


outcomes = st.lists(st.tuples(st.sampled_from(THREE.regions),
                              st.sampled_from(["up", "down", "degraded", "error", "expired"])),
                    max_size=60)


@given(outcomes, st.integers(min_value=1, max_value=59))
@settings(max_examples=200, deadline=None)
def test_the_events_depend_on_the_results_alone(items, cut):
    """However the state is stored and read back between results (as the evaluator does per
    result), the same results give the same events with the same ids; and every event id is
    unique (one event per transition)."""
    _, at_once = run(items, THREE)
    state = MonitorState()
    stepwise: list[Event] = []
    for slot, (region, outcome) in enumerate(items, start=1):
        state = MonitorState.from_json(state.to_json())
        stepwise += evaluate("m", state, THREE, result(slot, outcome, region)).events
    assert stepwise == at_once
    ids = [e.id for e in at_once]
    assert len(ids) == len(set(ids))
    assert all(Event.from_json(e.to_json()) == e for e in at_once[:cut])


@given(outcomes)
@settings(max_examples=200, deadline=None)
def test_every_incident_opened_is_resolved_before_the_next_opens(items):
    _, events = run(items, THREE)
    open_id = None
    for event in events:
        if event.type == "incident.opened":
            assert open_id is None
            open_id = event.incident_id
        elif event.type == "incident.resolved":
            assert event.incident_id == open_id
            open_id = None


def test_regions_that_disagree_keep_the_status_it_has():
    """Two regions, quorum 2: eu's down comes in before us's of the same slot; the monitor
    does not pass through unknown (nor raise monitoring.degraded) on the way down."""
    two = replace(RULES, regions=("eu", "us"), quorum=2)
    ups = [{"eu": "up", "us": "up"}] * 2
    state, events = run(ups + [{"eu": "down", "us": "down"}] * 3, two)
    assert state.status == "down"
    assert [e.status for e in events if e.type == "monitor.changed"] == ["up", "down"]
    assert not [e for e in events if e.type.startswith("monitoring.")]
    state, events = run(ups + [{"eu": "down", "us": "up"}] * 5, two)
    assert state.status == "up"
