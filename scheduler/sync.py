"""Monitor definitions from Postgres into the Redis schedule.

Both notify and reconcile: LISTEN/NOTIFY brings a change within milliseconds; a periodic
reconcile (VIGIL_RECONCILE_S) repairs whatever a dropped listener connection missed, and the
first one after start-up loads everything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis
import structlog

from engine import metrics, store
from engine.keys import Keys
from scheduler.plan import compile_plan
from scheduler.schedule import first_due

CHANNEL = "vigil_monitors"
SYNC_BATCH = 500
_SCRIPT = Path(__file__).with_name("sync.lua").read_text()
log = structlog.get_logger(component="scheduler.sync")


class MonitorSync:
    def __init__(self, r: aioredis.Redis, pool: asyncpg.Pool, keys: Keys) -> None:
        self.r = r
        self.pool = pool
        self.keys = keys
        self._script = r.register_script(_SCRIPT)
        self._synced: dict[str, int] = {}
        self._changed: set[str] = set()
        self.wake = asyncio.Event()

    def on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self._changed.add(str(payload))
        self.wake.set()

    async def _upsert(self, rows: Iterable[asyncpg.Record]) -> int:
        now = int(time.time() * 1000)
        args: list[str | int | bytes] = []
        count = 0
        for row in rows:
            args += [row["id"], compile_plan(row), first_due(row["id"], row["interval_ms"], now)]
            self._synced[row["id"]] = row["version"]
            count += 1
            if len(args) >= SYNC_BATCH * 3:
                await self._script(keys=[self.keys.due, self.keys.plan], args=args)
                args = []
        if args:
            await self._script(keys=[self.keys.due, self.keys.plan], args=args)
        return count

    async def _remove(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        for start in range(0, len(ids), SYNC_BATCH):
            chunk = ids[start:start + SYNC_BATCH]
            async with self.r.pipeline(transaction=True) as pipe:
                pipe.hdel(self.keys.plan, *chunk)
                pipe.zrem(self.keys.due, *chunk)
                await pipe.execute()
        for mid in ids:
            self._synced.pop(mid, None)
        return len(ids)

    async def apply_changes(self) -> None:
        """Sync the monitors named by notifications since the last call."""
        ids, self._changed = list(self._changed), set()
        if not ids:
            return
        rows = await store.plan_rows(self.pool, ids)
        await self._upsert(rows)
        live = {r["id"] for r in rows}
        removed = await self._remove(i for i in ids if i not in live)
        log.info("monitors synced", upserted=len(rows), removed=removed, cause="notify")

    async def reconcile(self) -> None:
        versions = await store.versions(self.pool)
        stale = [mid for mid, v in versions.items() if self._synced.get(mid) != v]
        upserted = 0
        for start in range(0, len(stale), 5_000):
            upserted += await self._upsert(
                await store.plan_rows(self.pool, stale[start:start + 5_000]))
        names: list[bytes] = await self.r.hkeys(self.keys.plan)  # type: ignore[assignment]
        in_redis = {k.decode() for k in names}
        removed = await self._remove(in_redis - versions.keys())
        metrics.MONITORS.set(len(versions))
        if upserted or removed:
            log.info("monitors synced", upserted=upserted, removed=removed, cause="reconcile")
