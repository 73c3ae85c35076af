"""Pure parts of the sinks: the status batch reductions and the ClickHouse row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.events import OUTCOMES, Outcome
from sinks.clickhouse import COLUMNS, row
from sinks.status import latest, points
from tests.support.helpers import check_result

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def test_latest_keeps_the_newest_per_monitor_and_region() -> None:
    batch = [
        check_result("a", 3_000, region="eu"), check_result("a", 1_000, region="eu"),
        check_result("a", 2_000, region="eu"), check_result("a", 1_000, region="us"),
        check_result("b", 5_000, region="eu"), check_result("b", 4_000, region="eu"),
    ]
    got = {(r.monitor_id, r.region): r.scheduled_ms for r in latest(batch)}
    assert got == {("a", "eu"): 3_000, ("a", "us"): 1_000, ("b", "eu"): 5_000}


def test_latest_drops_expired() -> None:
    batch = [check_result("a", scheduled_ms=1_000, outcome="down"),
             check_result("a", scheduled_ms=2_000, outcome="expired"),
             check_result("b", scheduled_ms=1_000, outcome="expired")]
    got = latest(batch)
    assert [(r.monitor_id, r.scheduled_ms, r.outcome) for r in got] == [("a", 1_000, "down")]


def test_latest_of_nothing_is_nothing() -> None:
    assert latest([]) == []


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["eu", "us"]),
                          st.integers(min_value=0, max_value=20), st.sampled_from(OUTCOMES)),
                max_size=40))
@settings(max_examples=200)
def test_latest_matches_a_model(items: list[tuple[str, str, int, Outcome]]) -> None:
    batch = [check_result(m, sch, outcome, region=rg) for m, rg, sch, outcome in items]
    expected: dict[tuple[str, str], int] = {}
    for m, rg, sch, outcome in items:
        if outcome != "expired":
            expected[(m, rg)] = max(sch, expected.get((m, rg), sch))
    got = latest(batch)
    assert len(got) == len({(r.monitor_id, r.region) for r in got})
    assert {(r.monitor_id, r.region): r.scheduled_ms for r in got} == expected
    # Order-safe: the reduction does not depend on the order results arrive in.
    reversed_got = latest(batch[::-1])
    assert {(r.monitor_id, r.region): r.scheduled_ms for r in reversed_got} == expected
    assert all(r.outcome != "expired" for r in got)


def test_points_keep_every_slot_once_sorted_and_the_first_result_for_it() -> None:
    batch = [check_result("b", 2_000, "down", region="eu"), check_result("a", 3_000, "up"),
             check_result("a", 1_000, "down"), check_result("a", 3_000, "down"),
             check_result("a", 2_000, "expired"), check_result("b", 2_000, "up", region="eu")]
    assert points(batch) == [("a", "default", 1_000, "down"), ("a", "default", 3_000, "up"),
                             ("b", "eu", 2_000, "down")]


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["eu", "us"]),
                          st.integers(min_value=0, max_value=20), st.sampled_from(OUTCOMES)),
                max_size=40))
@settings(max_examples=200)
def test_points_agree_with_latest(items: list[tuple[str, str, int, Outcome]]) -> None:
    """The status row and the history see one batch alike: the newest point per monitor and
    region is the result latest() keeps."""
    batch = [check_result(m, sch, outcome, region=rg) for m, rg, sch, outcome in items]
    newest = {(m, rg): (sch, status) for m, rg, sch, status in points(batch)}
    assert newest == {(r.monitor_id, r.region): (r.scheduled_ms, r.outcome)
                      for r in latest(batch)}
    assert points(batch) == sorted(set(points(batch)))
    assert len({(m, rg, sch) for m, rg, sch, _ in points(batch)}) == len(points(batch))


def test_row_has_one_value_per_column() -> None:
    full = check_result(latency_ms=12.5, phases={"dns": 1.0, "connect": 2.0, "tls": 3.0,
                                           "first_byte": 4.0},
                  status_code=503, error_kind="status", error="status 503 not in [200]",
                  tls_expiry_ms=1_800_000_000_000, executor="host-1", deliveries=2,
                  maintenance=True)
    values = dict(zip(COLUMNS, row(full), strict=True))
    assert values == {
        "check_id": "m:default:1000", "monitor_id": "m", "region": "default",
        "scheduled": EPOCH + timedelta(milliseconds=1_000),
        "started": EPOCH + timedelta(milliseconds=1_001),
        "finished": EPOCH + timedelta(milliseconds=1_002),
        "outcome": "up", "latency_ms": 12.5, "dns_ms": 1.0, "connect_ms": 2.0, "tls_ms": 3.0,
        "first_byte_ms": 4.0, "status_code": 503, "error_kind": "status",
        "error": "status 503 not in [200]",
        "tls_expiry": EPOCH + timedelta(milliseconds=1_800_000_000_000),
        "executor": "host-1", "deliveries": 2,
        "phases": {"dns": 1.0, "connect": 2.0, "tls": 3.0, "first_byte": 4.0},
        "maintenance": True,
    }


def test_row_of_a_bare_result_fills_defaults() -> None:
    values = dict(zip(COLUMNS, row(check_result(outcome="error")), strict=True))
    assert len(row(check_result())) == len(COLUMNS)
    # error_kind and error are non-Nullable String columns.
    assert values["error_kind"] == ""
    assert values["error"] == ""
    for name in ("latency_ms", "dns_ms", "connect_ms", "tls_ms", "first_byte_ms",
                 "status_code", "tls_expiry"):
        assert values[name] is None


# Up to 2^42 ms (the year 2109): beyond about 2^33 s, ms / 1000 as a float no longer holds
# the millisecond exactly.
@given(st.integers(min_value=0, max_value=2**42))
@settings(max_examples=300)
def test_row_timestamps_keep_the_millisecond(ms: int) -> None:
    values = dict(zip(COLUMNS, row(check_result(scheduled_ms=ms)), strict=True))
    scheduled = values["scheduled"]
    assert scheduled.tzinfo is not None
    assert (scheduled - EPOCH) // timedelta(milliseconds=1) == ms
    assert (scheduled - EPOCH) % timedelta(milliseconds=1) == timedelta(0)
