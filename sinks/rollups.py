"""The settle step of the ClickHouse rollups (migration 0007), run by the ClickHouse sink role:
every few minutes, closed hours are made equal to the raw rows with FINAL
(engine.rollups.settle) and the settled mark moves on.

One settler at a time per database: two at once could insert the same correction twice
(figures off until the next run). Every ClickHouse sink process runs the step, so each round
takes a Redis lock first (engine.keys `rollups_settle`: SET NX PX with a token, released by its
owner only) and a process that does not get it skips the round.
"""

from __future__ import annotations

import asyncio

import structlog
from redis.asyncio import Redis
from redis.exceptions import LockNotOwnedError

from engine import rollups
from engine.clickhouse import ClickHouse
from engine.keys import Keys
from engine.service import every

log = structlog.get_logger(component="rollups")

EVERY_S = 300.0
# An hour is closed this long after it ends: the sink writes in batches of seconds, and a
# result written later still reaches the rollups through the view (only a duplicate needs the
# next run's look back).
GRACE_MS = 10 * 60_000
# How long the lock outlives its last renewal. A run renews it after every day it settles, so
# this need only outlast one day's statements (seconds), and a killed settler's lock is gone
# before the next round.
LOCK_TTL_S = 240.0


class RollupSettler:
    name = "rollups-settle"

    def __init__(self, ch: ClickHouse, r: Redis, keys: Keys, every_s: float = EVERY_S,
                 lock_ttl_s: float = LOCK_TTL_S) -> None:
        self.ch = ch
        self.every_s = every_s
        self.lock = r.lock(keys.rollups_settle, timeout=lock_ttl_s, blocking=False,
                           thread_local=False)
        self.marks: dict[str, int] = {}

    async def settle_once(self) -> dict[str, int] | None:
        """The marks after this round; None: another settler holds the lock."""
        if not await self.lock.acquire():
            return None
        try:
            # The database's clock, not this host's: the rows' hours are the ones it holds.
            now_ms = int((await self.ch.rows("SELECT toUnixTimestamp64Milli(now64(3))"))[0][0])
            # Renewing raises LockNotOwnedError once the lock has expired (another settler may
            # have it by now): the run stops before its next statement, unmarked.
            marks = await rollups.settle(self.ch, now_ms - GRACE_MS, self.lock.reacquire)
        finally:
            try:
                await self.lock.release()
            except LockNotOwnedError:
                log.warning("rollups settle outlasted its lock", ttl_s=self.lock.timeout)
        if marks != self.marks:
            log.info("rollups settled", **{f"{k}_through_ms": v for k, v in marks.items()})
            self.marks = marks
        return marks

    async def run(self, stop: asyncio.Event) -> None:
        await every(self.every_s, stop, self.settle_once, self.name)
