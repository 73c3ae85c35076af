"""The ceiling of VIGIL_MAX_CHECKS_PER_MINUTE: at most that many checks start a minute over
every executor together, however many there are.

A token bucket in Redis (ceiling.lua; one key in the first shard's slot, Keys.ceiling) holds
one second's worth of tokens (at least one) and refills at the ceiling's rate in Redis time:
checks start spread over the minute, and any 60 s see at most the ceiling plus that one
second's burst. A fixed window per minute would let a minute's checks all start in its first
seconds and then hold every check for the rest of it, past most deadlines. An executor takes
tokens for the checks it has read, as many as it wants in one call: one round trip per read
batch, not per check (executors.service). A check without a token waits in the executor's
buffer, the rest of the stream unread behind it, until one comes or its deadline passes;
then it is `expired`.

When the ceiling's Redis cannot be reached, checks run without it (fail open), with one
warning until it works again: the ceiling spares targets and budgets a flood of checks, and
monitoring that stops because a counter is away would be the worse failure.
"""

from __future__ import annotations

import math
from importlib import resources

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.keys import Keys
from engine.service import Outage

CEILING_LUA = resources.files("executors").joinpath("ceiling.lua").read_text()


class Ceiling:
    def __init__(self, r: aioredis.Redis, keys: Keys, per_minute: int) -> None:
        self.per_minute = per_minute
        self.burst = max(1, math.ceil(per_minute / 60))
        self.key = keys.ceiling
        self._script = r.register_script(CEILING_LUA)
        self.outage = Outage("taking tokens of the checks-per-minute ceiling", key=self.key,
                             meanwhile="checks run without VIGIL_MAX_CHECKS_PER_MINUTE")

    async def take(self, want: int) -> tuple[int, float]:
        """Up to `want` tokens in one round trip: how many were granted, and when fewer, the
        seconds until the next one comes (0 otherwise)."""
        try:
            granted, wait_ms = await self._script(keys=[self.key],
                                                  args=[self.per_minute, self.burst, want])
        except RedisError as exc:
            self.outage.failed(exc)
            return want, 0.0
        self.outage.ok()
        return int(granted), int(wait_ms) / 1000
