"""Schedule math: slots at phase + k * interval, phases spread by monitor id.

The phase is computed here; scheduler/sync.lua places a new monitor on the first slot of its
grid at or after Redis time, and scheduler/dispatch.lua moves it along the grid, skipping the
slots missed while no scheduler ran.
"""

from __future__ import annotations

import zlib


def phase_ms(monitor_id: str, interval_ms: int) -> int:
    """A stable offset in [0, interval): 10,000 monitors with one interval spread evenly
    instead of firing in the same millisecond, and every scheduler computes the same one."""
    return zlib.crc32(monitor_id.encode()) % interval_ms
