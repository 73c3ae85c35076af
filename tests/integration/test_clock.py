"""engine.clock.RedisClock against a real redis-server: the offset it keeps to Redis time."""

from __future__ import annotations

import time

from engine.clock import RedisClock


async def test_a_slow_first_round_trip_does_not_skew_the_offset(r):
    """The first TIME on a connection includes its set-up (seen: 30-130 ms under load, which
    put an executor's clock that far ahead). Here the first reading of the local clock is
    taken 200 ms before the call, as a slow round trip would: a clock that used that sample's
    midpoint would be 100 ms off; the quickest sample's is off by half its own round trip."""
    readings = 0

    def local() -> float:
        nonlocal readings
        readings += 1
        return time.time() * 1000 - (200 if readings == 1 else 0)

    clock = RedisClock(r, local=local)
    await clock.sync()
    assert abs(clock.offset_ms) < 50
