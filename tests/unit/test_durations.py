"""The duration parser: what people write, to a whole number of milliseconds, and a clear error
for anything else (never another exception, never a rounded or absurd value)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.durations import MAX_DURATION_MS, parse_duration_ms

UNITS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


@pytest.mark.parametrize(("value", "ms"), [
    ("30s", 30_000), ("1m", 60_000), ("500ms", 500), ("1.5h", 5_400_000), ("2d", 172_800_000),
    ("45", 45_000), (" 10 s ", 10_000), ("1.5s", 1_500), (30, 30_000), (0.5, 500), (2.5, 2_500),
    ("0s", 0), (0, 0), (-0.0, 0), ("3650d", MAX_DURATION_MS), (MAX_DURATION_MS // 1000,
                                                                MAX_DURATION_MS),
])
def test_parse_duration(value: Any, ms: int) -> None:
    assert parse_duration_ms(value) == ms


@pytest.mark.parametrize("value", ["", "abc", "10x", "s", "-5s", "1,5s", "1e3s", "30 S", True,
                                   None, [30]])
def test_parse_duration_rejects(value: Any) -> None:
    with pytest.raises(ValueError, match="duration like"):
        parse_duration_ms(value)


@pytest.mark.parametrize(("value", "message"), [
    (float("nan"), "not a finite"),
    (float("inf"), "not a finite"),
    (float("-inf"), "not a finite"),
    (1e308, "longer than 3650d"),
    pytest.param(10**400, "a 1329-bit number is longer than 3650d", id="10**400"),
    pytest.param(-(10**5000), "a 16610-bit number is negative", id="-10**5000"),
    ("3651d", "longer than 3650d"),
    ("99999999999999999999999999999d", "longer than 3650d"),
    (-5, "negative"),
    (-0.001, "negative"),
    ("1.5ms", "whole number of milliseconds"),
    (0.0005, "whole number of milliseconds"),
    ("1.0000000000000000000000000001s", "whole number of milliseconds"),
])
def test_parse_duration_refuses_what_is_no_duration(value: Any, message: str) -> None:
    """Before: NaN and 1e308 raised OverflowError/ValueError from round(), -5 was -5000 ms,
    1.5ms was rounded to 2 ms, 3651d was accepted."""
    with pytest.raises(ValueError, match=message):
        parse_duration_ms(value)


def test_a_long_text_is_refused_before_matching() -> None:
    """The pattern never sees more than a duration's worth of text (a megabyte of spaces from a
    request body would otherwise be matched character by character)."""
    with pytest.raises(ValueError, match="too long"):
        parse_duration_ms("1" + " " * 100 + "s")


@given(st.integers(min_value=0, max_value=MAX_DURATION_MS), st.sampled_from(["s", "m", "h", "d"]))
@settings(max_examples=200)
def test_thousandths_of_any_unit_are_read_exactly(thousandths: int, unit: str) -> None:
    """`1.001s`, `0.125h`: decimal arithmetic, so no float error either way of the maximum."""
    written = f"{Decimal(thousandths) / 1000:f}{unit}"
    ms = thousandths * UNITS[unit] // 1000  # exact: every unit but ms is whole seconds
    if ms > MAX_DURATION_MS:
        with pytest.raises(ValueError, match="longer than"):
            parse_duration_ms(written)
    else:
        assert parse_duration_ms(written) == ms


@given(st.integers(min_value=0, max_value=10**15), st.sampled_from(list(UNITS)))
@settings(max_examples=200)
def test_integer_with_unit_is_exact_or_over_the_maximum(amount: int, unit: str) -> None:
    if amount * UNITS[unit] > MAX_DURATION_MS:
        with pytest.raises(ValueError, match="longer than"):
            parse_duration_ms(f"{amount}{unit}")
    else:
        assert parse_duration_ms(f"{amount}{unit}") == amount * UNITS[unit]


@given(st.one_of(st.floats(), st.integers(), st.text(max_size=40), st.booleans(), st.none()))
@settings(max_examples=500)
def test_any_input_is_a_bounded_whole_duration_or_a_value_error(value: Any) -> None:
    try:
        ms = parse_duration_ms(value)
    except ValueError:
        return
    assert isinstance(ms, int)
    assert 0 <= ms <= MAX_DURATION_MS


@pytest.mark.parametrize("value", ["1.001s", 1.001])
def test_parse_duration_does_not_truncate_float_error(value: Any) -> None:
    assert parse_duration_ms(value) == 1_001
