"""`vigil scheduler`: keep the schedule in sync with Postgres and dispatch due checks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import asyncpg
import redis.asyncio as aioredis
import structlog

from engine.keys import Keys
from engine.service import every
from engine.shards import listed
from scheduler.dispatch import Dispatcher
from scheduler.expire import EVERY_S as EXPIRE_EVERY
from scheduler.expire import Expirer
from scheduler.maintenance import MaintenanceKeeper
from scheduler.sync import CHANNEL, MonitorSync

log = structlog.get_logger(component="scheduler")


class Scheduler:
    """Serves a set of shards (`keys`, of `shards` in all): per shard a monitor sync, a
    dispatch loop and an expirer; one LISTEN connection and one maintenance keeper for all."""

    name = "scheduler"

    def __init__(self, r: aioredis.Redis, pool: asyncpg.Pool, keys: Keys | Sequence[Keys],
                 reconcile_s: float, postgres_dsn: str, claim_idle_ms: int,
                 shards: int = 1) -> None:
        served = listed(keys)
        self.syncs = [MonitorSync(r, pool, k, shards) for k in served]
        self.dispatchers = [Dispatcher(r, k) for k in served]
        self.expirers = [Expirer(r, pool, k, claim_idle_ms) for k in served]
        self.maintenance = MaintenanceKeeper(r, pool, served, shards=shards)
        self.reconcile_s = reconcile_s
        self.postgres_dsn = postgres_dsn
        self._wake = asyncio.Event()

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        for sync in self.syncs:  # each takes only its shard's monitors
            sync.on_notify(conn, pid, channel, payload)
        self._wake.set()

    async def reconcile(self) -> None:
        for sync in self.syncs:
            await sync.reconcile()

    async def expire(self) -> None:
        for expirer in self.expirers:
            await expirer.run_once()

    async def _listen(self, stop: asyncio.Event) -> None:
        """Hold a LISTEN connection; reconnect when it drops (the reconcile covers the gap)."""
        while not stop.is_set():
            try:
                conn = await asyncpg.connect(self.postgres_dsn)
                try:
                    await conn.add_listener(CHANNEL, self._on_notify)
                    # A change missed before LISTEN took effect is picked up here.
                    await self.reconcile()
                    while not stop.is_set() and not conn.is_closed():
                        if self._wake.is_set():
                            self._wake.clear()
                            for sync in self.syncs:
                                await sync.apply_changes()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                finally:
                    await conn.close()
            except Exception as exc:
                log.warning("monitor sync interrupted", error=repr(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)

    async def run(self, stop: asyncio.Event) -> None:
        log.info("scheduler started", shards=[s.keys.shard for s in self.syncs])
        await asyncio.gather(
            self._listen(stop),
            every(self.reconcile_s, stop, self.reconcile, "reconcile"),
            every(EXPIRE_EVERY, stop, self.expire, "expire"),
            self.maintenance.run(stop),
            *(dispatcher.run(stop) for dispatcher in self.dispatchers),
        )
        log.info("scheduler stopped")
