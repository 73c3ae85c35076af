"""`vigil scheduler`: keep the schedule in sync with Postgres and dispatch due checks."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import redis.asyncio as aioredis
import structlog

from engine.keys import Keys
from engine.service import every
from scheduler.dispatch import Dispatcher
from scheduler.expire import EVERY_S as EXPIRE_EVERY
from scheduler.expire import Expirer
from scheduler.maintenance import MaintenanceKeeper
from scheduler.sync import CHANNEL, MonitorSync

log = structlog.get_logger(component="scheduler")


class Scheduler:
    name = "scheduler"

    def __init__(self, r: aioredis.Redis, pool: asyncpg.Pool, keys: Keys, reconcile_s: float,
                 postgres_dsn: str, claim_idle_ms: int) -> None:
        self.sync = MonitorSync(r, pool, keys)
        self.dispatcher = Dispatcher(r, keys)
        self.expirer = Expirer(r, pool, keys, claim_idle_ms)
        self.maintenance = MaintenanceKeeper(r, pool, keys)
        self.reconcile_s = reconcile_s
        self.postgres_dsn = postgres_dsn

    async def _listen(self, stop: asyncio.Event) -> None:
        """Hold a LISTEN connection; reconnect when it drops (the reconcile covers the gap)."""
        while not stop.is_set():
            try:
                conn = await asyncpg.connect(self.postgres_dsn)
                try:
                    await conn.add_listener(CHANNEL, self.sync.on_notify)
                    # A change missed before LISTEN took effect is picked up here.
                    await self.sync.reconcile()
                    while not stop.is_set() and not conn.is_closed():
                        if self.sync.wake.is_set():
                            self.sync.wake.clear()
                            await self.sync.apply_changes()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self.sync.wake.wait(), timeout=1.0)
                finally:
                    await conn.close()
            except Exception as exc:
                log.warning("monitor sync interrupted", error=repr(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)

    async def run(self, stop: asyncio.Event) -> None:
        log.info("scheduler started")
        await asyncio.gather(
            self._listen(stop),
            every(self.reconcile_s, stop, self.sync.reconcile, "reconcile"),
            every(EXPIRE_EVERY, stop, self.expirer.run_once, "expire"),
            self.maintenance.run(stop),
            self.dispatcher.run(stop),
        )
        log.info("scheduler stopped")
