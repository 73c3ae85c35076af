"""Event schemas: round trips, strict decoding, and the template a plan carries."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.events import (
    CHECK_DUE,
    CHECK_RESULT,
    DEADLINE_MARK,
    DUE_VERSION,
    MAINTENANCE_MARK,
    OUTCOMES,
    RESULT_VERSION,
    SLOT_MARK,
    BadEvent,
    CheckDue,
    CheckResult,
    check_id,
)
from engine.monitors import ID_PATTERN, REGION_PATTERN

texts = st.text(st.characters(codec="utf-8"), max_size=30)
monitor_ids = st.from_regex(ID_PATTERN, fullmatch=True)
regions = st.from_regex(REGION_PATTERN, fullmatch=True)
epoch_ms = st.integers(min_value=0, max_value=2**43)
small_ints = st.integers(min_value=0, max_value=2**31)
finite = st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | finite | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=10,
)
specs = st.dictionaries(texts, json_values, max_size=5)


@st.composite
def check_dues(draw: st.DrawFn) -> CheckDue:
    mid, region, scheduled = draw(monitor_ids), draw(regions), draw(epoch_ms)
    return CheckDue(check_id=check_id(mid, region, scheduled), monitor_id=mid, region=region,
                    scheduled_ms=scheduled, deadline_ms=scheduled + draw(small_ints),
                    interval_ms=draw(small_ints), timeout_ms=draw(small_ints),
                    spec_version=draw(small_ints), kind=draw(texts), spec=draw(specs))


@st.composite
def check_results(draw: st.DrawFn) -> CheckResult:
    optional_int = st.none() | small_ints
    return CheckResult(
        check_id=draw(texts), monitor_id=draw(texts), region=draw(texts),
        scheduled_ms=draw(epoch_ms), started_ms=draw(epoch_ms), finished_ms=draw(epoch_ms),
        outcome=draw(st.sampled_from(OUTCOMES)),
        latency_ms=draw(st.none() | finite),
        phases=draw(st.dictionaries(st.sampled_from(["dns", "connect", "tls", "first_byte"]),
                                    finite)),
        status_code=draw(optional_int), error_kind=draw(st.none() | texts),
        error=draw(st.none() | texts), tls_expiry_ms=draw(optional_int),
        executor=draw(texts), deliveries=draw(st.integers(min_value=1, max_value=100)),
    )


def due_dict(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "v": DUE_VERSION, "type": CHECK_DUE, "check_id": "m:default:1000", "monitor_id": "m",
        "region": "default", "scheduled_ms": 1000, "deadline_ms": 61000, "interval_ms": 60000,
        "timeout_ms": 10000, "spec_version": 1, "kind": "tcp", "spec": {"port": 1},
    }
    data.update(changes)
    return data


def result_dict(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "v": RESULT_VERSION, "type": CHECK_RESULT, "check_id": "m:default:1000", "monitor_id": "m",
        "region": "default", "scheduled_ms": 1000, "started_ms": 1001, "finished_ms": 1002,
        "outcome": "up",
    }
    data.update(changes)
    return data


def without(data: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != name}


# --- round trips -----------------------------------------------------------------------------

@given(check_dues())
@settings(max_examples=200)
def test_check_due_round_trips(event: CheckDue) -> None:
    raw = event.to_json()
    assert CheckDue.from_json(raw) == event
    assert CheckDue.from_json(raw.decode()) == event
    data = orjson.loads(raw)
    assert data["v"] == DUE_VERSION
    assert data["type"] == CHECK_DUE


@given(check_results())
@settings(max_examples=200)
def test_check_result_round_trips(event: CheckResult) -> None:
    raw = event.to_json()
    assert CheckResult.from_json(raw) == event
    assert CheckResult.from_json(raw).as_dict() == orjson.loads(raw)


def test_check_result_defaults_round_trip() -> None:
    event = CheckResult.from_json(orjson.dumps(result_dict()))
    assert event == CheckResult(check_id="m:default:1000", monitor_id="m", region="default",
                                scheduled_ms=1000, started_ms=1001, finished_ms=1002,
                                outcome="up")


def test_check_result_ignores_unknown_fields() -> None:
    """A newer writer may add optional fields; this reader keeps the ones it knows."""
    event = CheckResult.from_json(orjson.dumps(result_dict(added_later=1)))
    assert event.outcome == "up"


# --- rejections --------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [CheckDue, CheckResult])
@pytest.mark.parametrize(("raw", "message"), [
    (b"not json", "not JSON"),
    (b"", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'"check.due"', "not a JSON object"),
    (b"null", "not a JSON object"),
])
def test_from_json_rejects_what_is_not_an_object(
        cls: type[CheckDue | CheckResult], raw: bytes, message: str) -> None:
    with pytest.raises(BadEvent, match=message):
        cls.from_json(raw)


@pytest.mark.parametrize(("cls", "data"), [
    (CheckDue, due_dict(type=CHECK_RESULT)),
    (CheckDue, without(due_dict(), "type")),
    (CheckResult, result_dict(type=CHECK_DUE)),
    (CheckResult, result_dict(type="status.changed")),
])
def test_from_json_rejects_the_wrong_type(
        cls: type[CheckDue | CheckResult], data: dict[str, Any]) -> None:
    with pytest.raises(BadEvent, match="type is"):
        cls.from_json(orjson.dumps(data))


@pytest.mark.parametrize("version", [0, 99, "1", "2", None])
@pytest.mark.parametrize(("cls", "data"), [(CheckDue, due_dict()), (CheckResult, result_dict())])
def test_from_json_rejects_another_version(
        cls: type[CheckDue | CheckResult], data: dict[str, Any], version: Any) -> None:
    with pytest.raises(BadEvent, match="version is"):
        cls.from_json(orjson.dumps({**data, "v": version}))


DUE_FIELDS = {"check_id": str, "monitor_id": str, "region": str, "scheduled_ms": int,
              "deadline_ms": int, "interval_ms": int, "timeout_ms": int, "spec_version": int,
              "kind": str, "spec": dict}
WRONG: dict[type, list[Any]] = {
    str: [1, None, ["m"]], int: ["1000", 1000.0, True, None], dict: [[], "{}", None],
}


@pytest.mark.parametrize("name", DUE_FIELDS)
def test_check_due_rejects_a_missing_field(name: str) -> None:
    with pytest.raises(BadEvent, match=re.escape(f"field {name!r}")):
        CheckDue.from_json(orjson.dumps(without(due_dict(), name)))


@pytest.mark.parametrize(("name", "value"), [
    (name, value) for name, kind in DUE_FIELDS.items() for value in WRONG[kind]
])
def test_check_due_rejects_a_mistyped_field(name: str, value: Any) -> None:
    with pytest.raises(BadEvent, match=re.escape(f"field {name!r}")):
        CheckDue.from_json(orjson.dumps(due_dict(**{name: value})))


RESULT_FIELDS = {"check_id": str, "monitor_id": str, "region": str, "scheduled_ms": int,
                 "started_ms": int, "finished_ms": int}


@pytest.mark.parametrize("name", [*RESULT_FIELDS, "outcome"])
def test_check_result_rejects_a_missing_field(name: str) -> None:
    with pytest.raises(BadEvent, match=re.escape(f"field {name!r}")):
        CheckResult.from_json(orjson.dumps(without(result_dict(), name)))


@pytest.mark.parametrize(("name", "value"), [
    *((name, value) for name, kind in RESULT_FIELDS.items() for value in WRONG[kind]),
    ("outcome", "unknown"), ("outcome", "UP"), ("outcome", 1),
])
def test_check_result_rejects_a_mistyped_field(name: str, value: Any) -> None:
    with pytest.raises(BadEvent, match=re.escape(f"field {name!r}")):
        CheckResult.from_json(orjson.dumps(result_dict(**{name: value})))


@pytest.mark.parametrize(("name", "value"), [
    ("latency_ms", "fast"), ("deliveries", "x"), ("status_code", "200"), ("phases", []),
    ("error", 1), ("tls_expiry_ms", 1.5),
])
def test_check_result_rejects_a_mistyped_optional_field(name: str, value: Any) -> None:
    with pytest.raises(BadEvent, match=re.escape(f"field {name!r}")):
        CheckResult.from_json(orjson.dumps(result_dict(**{name: value})))


# --- check_id ----------------------------------------------------------------------------------

@given(monitor_ids, regions, epoch_ms)
@settings(max_examples=200)
def test_check_id_is_deterministic(monitor_id: str, region: str, scheduled_ms: int) -> None:
    cid = check_id(monitor_id, region, scheduled_ms)
    assert cid == check_id(monitor_id, region, scheduled_ms)
    # Monitor ids and regions hold no `:`, so the id names its parts unambiguously.
    assert cid.split(":") == [monitor_id, region, str(scheduled_ms)]


def test_check_id_differs_per_slot_and_region() -> None:
    ids = {check_id("m", r, s) for r in ("eu", "us") for s in (1000, 2000)}
    assert len(ids) == 4


# --- the template a plan carries ---------------------------------------------------------------

@given(monitor_ids, regions, st.integers(min_value=1_000, max_value=86_400_000), specs)
@settings(max_examples=200)
def test_a_template_is_the_event_with_its_slot_and_deadline_marked(
        monitor_id: str, region: str, interval_ms: int, spec: dict[str, Any]) -> None:
    """Only the marks are left to fill in: two slot marks (check_id, scheduled_ms), one
    deadline mark, one maintenance mark, and no other byte of the spec can be taken for one."""
    template = CheckDue.template(monitor_id=monitor_id, region=region, interval_ms=interval_ms,
                                 timeout_ms=interval_ms - 1, spec_version=3, kind="tcp",
                                 spec_json=orjson.dumps(spec))
    assert (template.count(SLOT_MARK), template.count(DEADLINE_MARK),
            template.count(MAINTENANCE_MARK)) == (2, 1, 1)
    for flag in (False, True):
        event = CheckDue.from_json(template.replace(SLOT_MARK, b"0").replace(
            DEADLINE_MARK, b"1").replace(MAINTENANCE_MARK, orjson.dumps(flag)))
        assert event == CheckDue(check_id=check_id(monitor_id, region, 0), monitor_id=monitor_id,
                                 region=region, scheduled_ms=0, deadline_ms=1,
                                 interval_ms=interval_ms, timeout_ms=interval_ms - 1,
                                 spec_version=3, kind="tcp", spec=spec, maintenance=flag)
