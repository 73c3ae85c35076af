"""Monitor definitions: durations, validation errors that name the monitor and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.durations import parse_duration_ms
from engine.monitors import SpecError
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


# --- durations ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "ms"), [
    ("30s", 30_000), ("1m", 60_000), ("500ms", 500), ("1.5h", 5_400_000), ("2d", 172_800_000),
    ("45", 45_000), (" 10 s ", 10_000), ("1.5s", 1_500), (30, 30_000), (0.5, 500), (2.5, 2_500),
])
def test_parse_duration(value: Any, ms: int) -> None:
    assert parse_duration_ms(value) == ms


@pytest.mark.parametrize("value", ["", "abc", "10x", "s", "-5s", "1,5s", "1e3s", "30 S", True,
                                   None, [30]])
def test_parse_duration_rejects(value: Any) -> None:
    with pytest.raises(ValueError, match="duration like"):
        parse_duration_ms(value)


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(["ms", "s", "m", "h", "d"]))
@settings(max_examples=100)
def test_parse_duration_integer_with_unit(amount: int, unit: str) -> None:
    factor = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[unit]
    assert parse_duration_ms(f"{amount}{unit}") == amount * factor


@pytest.mark.parametrize("value", ["1.001s", 1.001])
def test_parse_duration_does_not_truncate_float_error(value: Any) -> None:
    assert parse_duration_ms(value) == 1_001


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


# --- files -------------------------------------------------------------------------------------

def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "monitors.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_load_file(tmp_path: Path) -> None:
    path = write(tmp_path, """
monitors:
  - id: shop
    kind: http
    interval: 30s
    timeout: 5s
    regions: [eu-west, us-east]
    http: {url: "https://shop.example.com/health", expected_status: [200, 204]}
  - id: db
    kind: tcp
    interval: 1m
    tcp: {host: db.internal, port: 5432}
""")
    shop, db = SCHEMA.load_file(path)
    assert isinstance(shop, HttpMonitor)
    assert isinstance(db, TcpMonitor)
    assert (shop.interval_ms, shop.timeout_ms, db.interval_ms) == (30_000, 5_000, 60_000)


def test_load_file_errors_name_the_file_and_the_monitor(tmp_path: Path) -> None:
    path = write(tmp_path, "monitors:\n  - {id: db, kind: tcp, tcp: {host: h, port: 0}}\n")
    with pytest.raises(SpecError) as info:
        SCHEMA.load_file(path)
    [problem] = info.value.problems
    assert path in problem
    assert "'db'" in problem
    assert "tcp.port" in problem


def test_load_file_missing(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.yaml")
    with pytest.raises(SpecError, match="No such file") as info:
        SCHEMA.load_file(path)
    assert path in str(info.value)


def test_load_file_invalid_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "monitors:\n  - id: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        SCHEMA.load_file(path)


@pytest.mark.parametrize("text", ["", "just text\n", "- id: a\n", "monitors:\n",
                                  "monitors: {id: a}\n", "other: []\n"])
def test_load_file_needs_a_monitors_list(tmp_path: Path, text: str) -> None:
    with pytest.raises(SpecError, match="top-level `monitors:` list"):
        SCHEMA.load_file(write(tmp_path, text))


def test_load_file_empty_list(tmp_path: Path) -> None:
    assert SCHEMA.load_file(write(tmp_path, "monitors: []\n")) == []


def test_load_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("monitors:\n  - id: café\n".encode("latin-1"))
    with pytest.raises(SpecError):
        SCHEMA.load_file(str(path))
