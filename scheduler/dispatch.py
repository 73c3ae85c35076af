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
# Monitors' phases spread over the interval: with a million of them a slot is due every few
# microseconds, and a call per slot would keep Redis busy with calls. The loop wakes at the next
# due time, but at most once a millisecond, so a call takes a millisecond's slots at once and
# none waits longer than that for its call.
MIN_PERIOD_S = 0.001
DISPATCH_SCRIPT = Path(__file__).with_name("dispatch.lua").read_text()
log = structlog.get_logger(component="scheduler.dispatch")


def wait_s(head_ms: int, now_s: float, since_call_s: float) -> float:
    """How long the loop sleeps after a call that left nothing due: until the next due time
    `head_ms` (-1: none; Redis time, like `now_s`, the call's), but at least until
    MIN_PERIOD_S after the call started (`since_call_s` ago), and at most IDLE_SLEEP_S, so
    monitors added since the call are picked up promptly."""
    if head_ms < 0:
        return IDLE_SLEEP_S
    return min(max(head_ms / 1000 - now_s, MIN_PERIOD_S - since_call_s), IDLE_SLEEP_S)


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
        # Redis time at the last call, to the microsecond: the wait for the next slot is
        # measured against it.
        self.now_s = 0.0

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
                      self.keys.retries, self.keys.paused, self.keys.shapes,
                      *(self.keys.checks(region) for region in self._regions)],
                args=[self.limit, EVENT_FIELD, *self._regions])
            if not named:
                break
            self._regions = await self._known_regions(named)
        self.now_s = float(now) / 1000
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
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            try:
                _, _, more, head, _ = await self.dispatch()
                self._outage.ok()
            except RedisError as exc:
                self._outage.failed(exc)
                more, head = False, -1
            if more:
                continue
            if (wait := wait_s(head, self.now_s, loop.time() - started)) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait)
