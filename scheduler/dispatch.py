"""The dispatch loop: call dispatch.lua until nothing is due, then sleep until the next slot."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from engine import metrics, queue
from engine.keys import Keys
from engine.service import Outage
from engine.streams import EVENT_FIELD

DISPATCH_LIMIT = 1_000
# How often checks of regions no executor serves are looked at (scheduler.expire).
IDLE_SLEEP_S = 0.25
# Monitors' phases spread over the interval, so without a floor the loop would wake once per
# check; 20 ms between calls batches them at a lag cost of at most 20 ms.
MIN_SLEEP_S = 0.02
DISPATCH_SCRIPT = Path(__file__).with_name("dispatch.lua").read_text()
log = structlog.get_logger(component="scheduler.dispatch")


class Dispatcher:
    """Calls the dispatch script until nothing is due, then sleeps until the next due time."""

    def __init__(self, r: aioredis.Redis, keys: Keys, limit: int = DISPATCH_LIMIT) -> None:
        self.r = r
        self.keys = keys
        self.limit = limit
        self._script = r.register_script(DISPATCH_SCRIPT)
        self._outage = Outage("dispatch")
        # The regions whose checks streams the script is given (Keys.regions, kept by the
        # sync), read at the first call and again when the script names one a plan has.
        self._regions: list[str] | None = None

    async def _known_regions(self, named: list[bytes]) -> list[str]:
        """The regions set, and the ones the script named even if the set lacks them (Redis
        lost it, or a plan was written without it: the reconcile puts them back)."""
        members: set[bytes] = await self.r.smembers(self.keys.regions)  # type: ignore[assignment]
        return sorted({m.decode() for m in members | set(named)} | set(self._regions or ()))

    async def dispatch(self) -> tuple[int, int, bool, int, int]:
        """One atomic call at Redis time: (dispatched, skipped, more due, next due ms or -1,
        Redis time now in ms)."""
        if self._regions is None:
            self._regions = await self._known_regions([])
        while True:
            dispatched, skipped, popped, head, now, held, named = await self._script(
                keys=[self.keys.due, self.keys.plan, self.keys.stats, self.keys.maintenance,
                      self.keys.retries, self.keys.paused,
                      *(self.keys.checks(region) for region in self._regions)],
                args=[self.limit, EVENT_FIELD, *self._regions])
            if not named:
                break
            self._regions = await self._known_regions(named)
        metrics.DISPATCHED.inc(dispatched)
        metrics.SKIPPED.inc(skipped)
        metrics.HELD.inc(held)
        if skipped:
            log.warning("missed slots skipped", skipped=skipped)
        return (int(dispatched), int(skipped), int(popped) >= self.limit, int(float(head)),
                int(float(now)))

    async def warn_if_paused(self) -> None:
        """A pause outlives a restart (it is kept in Redis): say so at start, or a scheduler
        that sends nothing looks broken."""
        with contextlib.suppress(RedisError):  # the loop reports an outage once
            if paused := await queue.paused(self.r, self.keys):
                log.warning("dispatch is paused by an operator; checks are held until "
                            "vigil queue resume", paused=sorted(paused))

    async def run(self, stop: asyncio.Event) -> None:
        await self.warn_if_paused()
        while not stop.is_set():
            try:
                _, _, more, head, now = await self.dispatch()
                self._outage.ok()
            except RedisError as exc:
                self._outage.failed(exc)
                more, head, now = False, -1, 0
            if more:
                continue
            # Capped so monitors added since the last call are picked up promptly.
            wait = IDLE_SLEEP_S if head < 0 else (head - now) / 1000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(),
                                       timeout=min(max(wait, MIN_SLEEP_S), IDLE_SLEEP_S))
