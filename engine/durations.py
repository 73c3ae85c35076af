"""Durations as people write them (`30s`, `5m`, `500ms`, `1.5h`, `2d`) or as seconds."""

from __future__ import annotations

import re
from typing import Any

_UNITS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration_ms(value: Any) -> int:
    """`30s`, `1m`, `500ms`, `1.5h` or a number of seconds, to milliseconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m or 500ms")
    if isinstance(value, int | float):
        return round(value * 1000)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration like 30s, 5m or 500ms")
    return round(float(match.group(1)) * _UNITS[match.group(2) or "s"])
