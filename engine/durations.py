"""Durations as people write them (`30s`, `5m`, `500ms`, `1.5h`, `2d`) or as seconds, to a whole
number of milliseconds.

The arithmetic is decimal, so `1.001s` is 1001 ms exactly where a float makes it
1000.999...; a value is refused, never rounded, when it is not a whole number of milliseconds,
negative, not finite, or longer than MAX_DURATION_MS. Each field checks its own, lower
maximum where it is defined (engine.monitors).
"""

from __future__ import annotations

import re
from decimal import Context, Decimal
from typing import Any

_UNITS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?")
_HELP = "a duration like 30s, 5m or 500ms"
# Ten years: past every field's own maximum, and exact as a double (Redis scores, JSON).
MAX_DURATION_MS = 3650 * 86_400_000
# No duration is longer to write; the pattern never sees a megabyte of spaces.
MAX_TEXT = 32
# Exact for every product that can pass: at most MAX_TEXT written digits (a float's repr has
# 17) times an 8-digit unit. A longer product is over the maximum, rounded or not.
_EXACT = Context(prec=50)


def parse_duration_ms(value: Any) -> int:
    """`30s`, `1m`, `500ms`, `1.5h` or a number of seconds, to milliseconds."""
    amount, unit = _amount(value)
    ms = _EXACT.multiply(amount, _UNITS[unit])
    if not ms.is_finite():
        raise ValueError(f"{_shown(value)} is not a finite duration")
    if ms < 0:
        raise ValueError(f"{_shown(value)} is negative")
    if ms > MAX_DURATION_MS:
        raise ValueError(f"{_shown(value)} is longer than {MAX_DURATION_MS // _UNITS['d']}d")
    if ms != ms.to_integral_value():
        raise ValueError(f"{_shown(value)} is not a whole number of milliseconds")
    return int(ms)


def _shown(value: Any) -> str:
    # An integer may have thousands of digits (and past 4,300 repr refuses to write them).
    if isinstance(value, int) and value.bit_length() > 63:
        return f"a {value.bit_length()}-bit number"
    return repr(value)


def _amount(value: Any) -> tuple[Decimal, str]:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected {_HELP}")
    if isinstance(value, int):
        return Decimal(value), "s"
    if isinstance(value, float):
        # repr is the shortest decimal that reads back as this float: 1.001, not 1.000999...
        return Decimal(repr(value)), "s"
    if len(value) > MAX_TEXT:
        raise ValueError(f"{value[:MAX_TEXT]!r}... is too long for {_HELP}")
    match = _DURATION.fullmatch(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not {_HELP}")
    return Decimal(match.group(1)), match.group(2) or "s"
