"""Redis server time, the one clock for scheduling, expiry and heartbeat decisions: a host
whose own clock is wrong can neither dispatch early nor expire a check that is on time.
Scripts read TIME themselves; a role that decides outside a script keeps its offset to
Redis time, measured at start and then every RESYNC_S from the midpoint of its quickest TIME
call."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import redis.asyncio as aioredis
import structlog

RESYNC_S = 30.0
SAMPLES = 3
# An offset past this is worth a line in the log: the host's clock is off, Vigil is not.
WARN_OFFSET_MS = 1_000
log = structlog.get_logger(component="clock")


async def redis_ms(r: aioredis.Redis) -> int:
    """Redis time now, epoch ms (one TIME round trip)."""
    seconds, micros = await r.time()
    return int(seconds * 1000 + micros // 1000)


def local_ms() -> float:
    return time.time() * 1000


class RedisClock:
    def __init__(self, r: aioredis.Redis, local: Callable[[], float] = local_ms) -> None:
        self.r = r
        self.local = local
        self.offset_ms = 0.0

    async def sync(self) -> None:
        """The offset from the quickest of SAMPLES round trips, as NTP does: the first call
        on a fresh connection includes its set-up, and a busy loop reads some replies late;
        either would put the midpoint far from the moment Redis read its clock."""
        best_rtt, offset = math.inf, 0.0
        for _ in range(SAMPLES):
            before = self.local()
            seconds, micros = await self.r.time()
            after = self.local()
            if after - before < best_rtt:
                best_rtt = after - before
                offset = seconds * 1000 + micros / 1000 - (before + after) / 2
        if abs(offset) > WARN_OFFSET_MS and abs(offset - self.offset_ms) > WARN_OFFSET_MS:
            log.warning("this host's clock differs from Redis time; using Redis time",
                        offset_ms=round(offset))
        self.offset_ms = offset

    def now_ms(self) -> int:
        """Now in Redis time, epoch ms."""
        return int(self.local() + self.offset_ms)
