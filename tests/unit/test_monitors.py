"""Monitor definitions: defaults, limits, validation errors that name the monitor and the field
(the duration parser has its own tests: test_durations.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine import monitors as limits
from engine.monitors import SpecError
from engine.rules import Rules
from executors.kinds import SCHEMA

HttpMonitor = SCHEMA.models["http"]
TcpMonitor = SCHEMA.models["tcp"]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "monitors.yaml"


def http(ident: str = "web", **changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": ident, "kind": "http", "http": {"url": "https://example.com/"}}
    entry.update(changes)
    return entry


def tcp(ident: str = "db", **changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": ident, "kind": "tcp", "tcp": {"host": "db.internal",
                                                                  "port": 5432}}
    entry.update(changes)
    return entry


def problems_of(entries: list[Any]) -> list[str]:
    with pytest.raises(SpecError) as info:
        SCHEMA.parse(entries)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


# --- valid definitions -------------------------------------------------------------------------

def test_the_repository_examples_parse() -> None:
    monitors = SCHEMA.load_file(str(EXAMPLES))
    assert [m.id for m in monitors] == ["vigil-health", "vigil-status-api", "closed-port"]
    health = monitors[0]
    assert isinstance(health, HttpMonitor)
    assert (health.interval_ms, health.timeout_ms) == (10_000, 5_000)
    assert health.http.expected_status == [200]
    closed = monitors[2]
    assert isinstance(closed, TcpMonitor)
    assert (closed.tcp.host, closed.tcp.port) == ("127.0.0.1", 9)


def test_defaults() -> None:
    [monitor] = SCHEMA.parse([http()])
    assert monitor.interval_ms == 60_000
    assert monitor.timeout_ms == 10_000
    assert monitor.regions == ["default"]
    assert monitor.enabled is True
    assert monitor.tags == []
    assert monitor.public_details is False


@pytest.mark.parametrize(("interval", "timeout", "expected"), [
    ("30s", "5s", (30_000, 5_000)),
    ("1m", "500ms", (60_000, 500)),
    (10, 2.5, (10_000, 2_500)),
    ("1s", "100ms", (1_000, 100)),
])
def test_durations_in_definitions(interval: Any, timeout: Any, expected: tuple[int, int]) -> None:
    [monitor] = SCHEMA.parse([tcp(interval=interval, timeout=timeout)])
    assert (monitor.interval_ms, monitor.timeout_ms) == expected


@pytest.mark.parametrize(("interval", "timeout_ms"), [
    ("1m", 10_000), ("20s", 10_000), ("10s", 8_000), ("5s", 4_000), ("1s", 800),
])
def test_default_timeout_fits_the_interval(interval: str, timeout_ms: int) -> None:
    """Without a timeout, a check gets 10 s or four fifths of its interval, whichever is less."""
    [monitor] = SCHEMA.parse([tcp(interval=interval)])
    assert monitor.timeout_ms == timeout_ms
    assert monitor.timeout_ms < monitor.interval_ms


@pytest.mark.parametrize("interval_ms", ["30000", 30_000.0])
def test_default_timeout_with_a_lax_typed_interval(interval_ms: Any) -> None:
    [monitor] = SCHEMA.parse([tcp(interval_ms=interval_ms)])
    assert monitor.timeout_ms == 10_000


def test_milliseconds_fields_are_accepted() -> None:
    [monitor] = SCHEMA.parse([http(interval_ms=20_000, timeout_ms=1_000)])
    assert (monitor.interval_ms, monitor.timeout_ms) == (20_000, 1_000)


def test_several_kinds_and_regions() -> None:
    monitors = SCHEMA.parse([http("a", regions=["eu-west", "us_east"]), tcp("b")])
    assert [type(m) for m in monitors] == [HttpMonitor, TcpMonitor]
    assert monitors[0].regions == ["eu-west", "us_east"]


# --- limits ------------------------------------------------------------------------------------

def test_everything_at_its_maximum_is_accepted() -> None:
    [monitor] = SCHEMA.parse([http(
        "x" * 128, name="n" * limits.MAX_NAME_LENGTH, interval="365d", timeout="1h",
        regions=[f"r{i}" for i in range(limits.MAX_REGIONS)],
        tags=["t" * limits.MAX_TAG_LENGTH] * limits.MAX_TAGS)])
    assert (monitor.interval_ms, monitor.timeout_ms) == (limits.MAX_INTERVAL_MS,
                                                         limits.MAX_TIMEOUT_MS)
    assert limits.MAX_INTERVAL_MS == 365 * 86_400_000
    assert limits.MAX_TIMEOUT_MS == 3_600_000


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"interval": "366d"}, "interval_ms", "less than or equal to 31536000000"),
    ({"interval_ms": limits.MAX_INTERVAL_MS + 1}, "interval_ms", "less than or equal to"),
    ({"interval": 1e308}, "interval", "longer than 3650d"),
    ({"interval": float("nan")}, "interval", "not a finite"),
    ({"interval": float("inf")}, "interval", "not a finite"),
    ({"interval": "-30s"}, "interval", "not a duration"),
    ({"interval": -30}, "interval", "negative"),
    ({"interval": "1000.5ms"}, "interval", "whole number of milliseconds"),
    ({"interval_ms": 1000.5}, "interval_ms", "fractional part"),
    ({"interval_ms": float("inf")}, "interval_ms", "finite number"),
    ({"interval_ms": 1e308}, "interval_ms", "integer"),
    ({"interval": "1d", "timeout": "61m"}, "timeout_ms", "less than or equal to 3600000"),
    ({"interval": "1d", "timeout": 1e308}, "timeout", "longer than 3650d"),
    ({"interval": "1d", "timeout_ms": limits.MAX_TIMEOUT_MS + 1}, "timeout_ms", "less than"),
    ({"name": "n" * (limits.MAX_NAME_LENGTH + 1)}, "name", "at most 200 characters"),
    ({"tags": ["t"] * (limits.MAX_TAGS + 1)}, "tags", "at most 32 items"),
    ({"tags": ["t" * (limits.MAX_TAG_LENGTH + 1)]}, "tags.0", "at most 64 characters"),
    ({"regions": [f"r{i}" for i in range(limits.MAX_REGIONS + 1)]}, "regions",
     "at most 16 items"),
])
def test_a_value_past_its_limit_is_an_error_naming_the_field(
        changes: dict[str, Any], field: str, message: str) -> None:
    """Before: 366d, 61m, 33 tags or a 201-character name passed validation (and the intervals
    then overflowed the int32 column); 1e308 and infinity raised OverflowError, a traceback."""
    [problem] = problems_of([http("limits", **changes)])
    assert problem.startswith(f"monitor 'limits' (monitors[0]): {field}: ")
    assert message in problem


def test_public_details_is_a_boolean() -> None:
    [shown] = SCHEMA.parse([http(public_details=True)])
    assert shown.public_details is True
    [problem] = problems_of([http(public_details="maybe")])
    assert ": public_details: " in problem


# --- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("entry", "field"), [
    (http("bad-url", http={"url": "not a url"}), "http.url"),
    (http("ftp-url", http={"url": "ftp://example.com/"}), "http.url"),
    (http("no-url", http={}), "http.url"),
    (http("bad-method", http={"url": "https://x.example/", "method": "FETCH"}), "http.method"),
    (tcp("port-zero", tcp={"host": "h", "port": 0}), "tcp.port"),
    (tcp("port-high", tcp={"host": "h", "port": 65_536}), "tcp.port"),
    (tcp("no-host", tcp={"host": "", "port": 80}), "tcp.host"),
    ({"id": "gopher", "kind": "gopher"}, "kind"),
    ({"id": "no-kind", "http": {"url": "https://x.example/"}}, "kind"),
    (http("fast", interval="500ms", timeout="100ms"), "interval"),
    (http("fast-ms", interval_ms=999, timeout_ms=100), "interval_ms"),
    (http("slow", interval="10s", timeout="10s"), "timeout"),
    (http("slower", interval="10s", timeout="1m"), "timeout"),
    (http("extra", retries=3), "retries"),
    (http("extra-http", http={"url": "https://x.example/", "follow": True}), "http.follow"),
    (http("region", regions=["eu west"]), "regions.0"),
    (http("no-region", regions=[]), "regions"),
    (http("tiny-timeout", timeout="50ms"), "timeout_ms"),
])
def test_error_names_the_monitor_and_the_field(entry: dict[str, Any], field: str) -> None:
    [problem] = problems_of([entry])
    assert f"monitor {entry['id']!r}" in problem
    assert field in problem


@pytest.mark.parametrize("ident", ["-leading-dash", "has space", "a/b", "a:b", "", "x" * 129,
                                   "ünïcode", "new\nline", "trailing\n"])
def test_bad_id_pattern(ident: str) -> None:
    [problem] = problems_of([http(ident)])
    assert ": id: " in problem


def test_missing_id() -> None:
    entry = http()
    del entry["id"]
    [problem] = problems_of([entry])
    assert "monitors[0]" in problem
    assert ": id: " in problem


def test_duplicate_ids() -> None:
    [problem] = problems_of([http("same"), tcp("other"), tcp("same")])
    assert "monitors[2]" in problem
    assert "duplicate id 'same'" in problem


def test_an_entry_that_is_not_a_mapping() -> None:
    [problem] = problems_of([http("ok"), "just a string"])
    assert "monitors[1]" in problem


def test_all_problems_are_listed_at_once() -> None:
    entries = [
        http("good"),
        http("bad-url", http={"url": "nope"}),
        tcp("bad-port", tcp={"host": "h", "port": 0}),
        {"id": "no-kind"},
        http("good"),
        http("extra", color="red"),
    ]
    problems = problems_of(entries)
    assert len(problems) == 5
    for needle in ("'bad-url'", "'bad-port'", "'no-kind'", "duplicate id 'good'", "'extra'"):
        assert sum(needle in p for p in problems) == 1, needle


def test_one_entry_with_several_problems_lists_each() -> None:
    problems = problems_of([tcp("multi", tcp={"host": "", "port": 0}, retries=1)])
    assert {p.split(": ")[1] for p in problems} == {"tcp.host", "tcp.port", "retries"}


def test_spec_error_raised_and_nothing_returned() -> None:
    result: list[Any] | None = None
    with pytest.raises(SpecError):
        result = SCHEMA.parse([http("fine"), tcp("broken", tcp={"host": "h", "port": 0})])
    assert result is None


@pytest.mark.parametrize("field", ["interval", "timeout"])
def test_bad_duration_names_the_field(field: str) -> None:
    [problem] = problems_of([http("bad-duration", **{field: "often"})])
    assert "'bad-duration'" in problem
    assert field in problem
    assert "'often'" in problem


@pytest.mark.parametrize("alerting", [{}, {"quorum": 2, "retry_interval": "5s", "retries": 3,
                                           "depends_on": ["db", "dns"]}])
def test_rules_are_written_compact_and_read_back_equal(alerting: dict[str, Any]) -> None:
    """The rules hash holds one entry per monitor: values in field order, no names; an
    entry with names (what an older scheduler wrote) still reads."""
    monitor = SCHEMA.validate({"id": "web", "kind": "tcp", "interval": "60s",
                               "regions": ["eu", "us", "ap"], "alerting": alerting,
                               "tcp": {"host": "127.0.0.1", "port": 9}})
    rules = Rules.of_row({"interval_ms": monitor.interval_ms, "timeout_ms": monitor.timeout_ms,
                          "regions": monitor.regions,
                          "alerting": monitor.alerting.model_dump(mode="json")})
    assert Rules.from_json(rules.to_json()) == rules
    named = orjson.dumps(dataclasses.asdict(rules))
    assert Rules.from_json(named) == rules
    assert len(rules.to_json()) < len(named) / 2
