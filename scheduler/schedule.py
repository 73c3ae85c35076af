"""Schedule math: slots at phase + k * interval, phases spread by monitor id.

The first slot is placed here (at sync); from there scheduler/dispatch.lua moves a monitor
along its grid in Redis, skipping the slots missed while no scheduler ran.
"""

from __future__ import annotations

import zlib


def phase_ms(monitor_id: str, interval_ms: int) -> int:
    """A stable offset in [0, interval): 10,000 monitors with one interval spread evenly
    instead of firing in the same millisecond, and every scheduler computes the same one."""
    return zlib.crc32(monitor_id.encode()) % interval_ms


def first_due(monitor_id: str, interval_ms: int, now_ms: int) -> int:
    """The first slot at or after now."""
    phase = phase_ms(monitor_id, interval_ms)
    return now_ms + (phase - now_ms) % interval_ms
