"""Token buckets per key (a client address, a push token), in this process's memory.

Each API process limits on its own: a limit of N per process is at most N times the number of
processes overall, which is enough to turn a flood into a trickle without a shared store. The
keys held are capped (least recently seen dropped first), so a client inventing keys costs a
bounded amount of memory; a key dropped that way starts again with a full bucket, which only
ever lets a few more requests through.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from engine.cache import MISS, BoundedCache


class Buckets:
    """`burst` requests at once per key, refilled at `per_s` a second."""

    def __init__(self, burst: int, per_s: float, max_keys: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.per_s = per_s
        self.clock = clock
        # key -> (tokens left, when they were counted)
        self._held: BoundedCache[str, tuple[float, float]] = BoundedCache(max_keys)

    def __len__(self) -> int:
        return len(self._held)

    def _tokens(self, key: str, now: float) -> float:
        held = self._held.get(key)
        if held is MISS:
            return float(self.burst)
        tokens, then = held
        return min(float(self.burst), tokens + (now - then) * self.per_s)

    def _wait(self, tokens: float) -> int:
        return 0 if tokens >= 1 else max(1, math.ceil((1 - tokens) / self.per_s))

    def wait_s(self, key: str) -> int:
        """Whole seconds until `key` has a request left (0: it has one now), for Retry-After."""
        return self._wait(self._tokens(key, self.clock()))

    def take(self, key: str) -> int:
        """Spend one of `key`'s requests: 0 if it had one, else wait_s (and nothing spent)."""
        now = self.clock()
        tokens = self._tokens(key, now)
        wait = self._wait(tokens)
        if not wait:
            self._held.put(key, (tokens - 1, now))
        return wait
