"""User patterns (executors.patterns): RE2 refuses at validation what it cannot run in linear
time and says why; a JSON path evaluation is bounded by a count of steps, so the same body
gets the same verdict on a busy machine and none can hold the loop."""

from __future__ import annotations

import sys

import orjson
import pytest

from executors.patterns import JSON_STEPS, JsonPath, Pattern, TooCostly

# 900 objects deep (orjson allows 1024); `$..a..a` has 404,550 matches in it.
DEEP = orjson.loads(b'{"a":' * 900 + b"1" + b"}" * 900)


def test_a_catastrophic_pattern_is_a_plain_search() -> None:
    pattern = Pattern.of(r"(a+)+$")
    assert not pattern.search("a" * 100_000 + "!")
    assert pattern.search("a" * 100_000)


@pytest.mark.parametrize(("pattern", "text", "found"), [
    (r"^220 \S+ ESMTP", "220 mail.example.test ESMTP ready", True),
    (r"(?i)^ok", "OK then", True),
    (r"good: \w+$", "all good: ok", True),
    # RE2's $ is the end of the text; Python's re also matched before a final newline.
    (r"ok$", "ok\n", False),
    (r"(?m)ok$", "ok\n", True),
    (r"caf.", "caf\ufffd", True),  # a body's invalid UTF-8 is read as U+FFFD
])
def test_search(pattern: str, text: str, found: bool) -> None:
    assert Pattern.of(pattern).search(text) is found


def test_patterns_compare_by_their_text() -> None:
    assert Pattern.of("a+") == Pattern.of("a+") != Pattern.of("a*")


def test_a_json_path_stops_at_its_step_budget() -> None:
    path = JsonPath.of("$..a..a")
    with pytest.raises(TooCostly, match=f"more than {JSON_STEPS:,} steps"):
        path.values(DEEP)
    assert JsonPath.of("$.a.a.a").values(DEEP) == [DEEP["a"]["a"]["a"]]


def test_the_step_budget_gives_the_trace_hook_back() -> None:
    """A debugger's or a coverage tool's hook is in place again after an evaluation."""
    seen: list[str] = []

    def outer(frame: object, event: str, arg: object) -> None:
        seen.append(event)

    previous = sys.gettrace()
    sys.settrace(outer)
    try:
        JsonPath.of("$.status").values({"status": "ok"})
        with pytest.raises(TooCostly):
            JsonPath.of("$..a..a").values(DEEP)
        assert sys.gettrace() is outer
    finally:
        sys.settrace(previous)


def test_usual_health_paths_fit_the_budget() -> None:
    items = {"status": "ok", "items": [{"name": f"svc{i}", "status": "ok"} for i in range(500)]}
    assert JsonPath.of("$.status").values(items) == ["ok"]
    assert JsonPath.of("$.items[*].status").values(items) == ["ok"] * 500
    assert JsonPath.of("$.items[?(@.name == 'svc7')].status").values(items) == ["ok"]
