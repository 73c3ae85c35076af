"""Schedule math: slots at phase + k * interval, phases spread by monitor id.

scheduler/dispatch.lua applies `next_slot` in Redis; tests hold the two to the same answers.
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


def next_slot(slot_ms: int, interval_ms: int, now_ms: int) -> tuple[int, int]:
    """For a slot due at or before now: (slot to dispatch, missed slots skipped).

    Slots more than one interval behind are skipped, so a scheduler back from downtime
    dispatches the latest slot only, on the same grid (no drift).
    """
    missed = max(0, (now_ms - slot_ms) // interval_ms)
    return slot_ms + missed * interval_ms, missed
