"""Monitor definitions from Postgres into the Redis schedule.

Both notify and reconcile: LISTEN/NOTIFY brings a change within milliseconds; a periodic
reconcile (VIGIL_RECONCILE_S) repairs whatever a dropped listener connection missed, and the
first one after start-up loads everything.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis
import structlog

from engine import heartbeats, metrics, store
from engine.clock import redis_ms
from engine.keys import Keys
from engine.rules import Rules
from engine.shards import shard_of
from scheduler.plan import compile_plan
from scheduler.schedule import phase_ms

CHANNEL = "vigil_monitors"
SYNC_BATCH = 500
# Batches sent and not yet answered: with one, Python and Redis (about as fast as each other
# at compiling and writing a batch) kept waiting for each other; two took a third off a sync.
IN_FLIGHT = 2
# Monitors read from Postgres at once by a reconcile (one query each).
FETCH_CHUNK = 5_000
# A tombstone outlives any reconcile that could still carry the revision it removed.
TOMBSTONE_KEEP_MS = 3_600_000
SYNC_SCRIPT = Path(__file__).with_name("sync.lua").read_text()
_REMOVE = Path(__file__).with_name("remove.lua").read_text()
log = structlog.get_logger(component="scheduler.sync")


def rules_json(row: asyncpg.Record) -> bytes:
    """The monitor's rules (engine.rules) as the rules hash holds them: a million monitors
    share a few, so each is validated and written once."""
    return _rules_json(row["interval_ms"], row["timeout_ms"], tuple(row["regions"]),
                       row["alerting"])


@functools.lru_cache(maxsize=4_096)
def _rules_json(interval_ms: int, timeout_ms: int, regions: tuple[str, ...],
                alerting: str) -> bytes:
    return Rules.of_row({"interval_ms": interval_ms, "timeout_ms": timeout_ms,
                         "regions": regions, "alerting": alerting}).to_json()


def _sync_args(rows: Sequence[asyncpg.Record]) -> list[str | int | bytes]:
    """sync.lua's arguments for one batch: the shapes its plans name, then each monitor's
    id, plan, phase, revision and rules."""
    shapes: dict[bytes, bytes] = {}
    monitors: list[str | int | bytes] = []
    for row in rows:
        plan = compile_plan(row)
        shapes[plan.digest] = plan.shape
        monitors += [row["id"], plan.plan, phase_ms(row["id"], row["interval_ms"]),
                     row["revision"], rules_json(row)]
    return [len(shapes), *(part for pair in shapes.items() for part in pair), *monitors]


class MonitorSync:
    """Makes the Redis schedule match Postgres. Every write is guarded by the monitor's
    revision in Redis itself (sync.lua, remove.lua), and the reconcile compares Postgres with
    what Redis holds, not with this process's memory: after a restart without persistence,
    a failover that lost the tail or a FLUSHALL, the next reconcile puts everything back."""

    def __init__(self, r: aioredis.Redis, pool: asyncpg.Pool, keys: Keys,
                 shards: int = 1) -> None:
        """Serves the monitors of shard `keys.shard` of `shards` (engine.shards)."""
        self.r = r
        self.pool = pool
        self.keys = keys
        self.shards = shards
        self.shard = store.Shard(int(keys.shard), shards) if shards > 1 else None
        self._sync = r.register_script(SYNC_SCRIPT)
        self._remove_script = r.register_script(_REMOVE)
        self._script_keys = [keys.due, keys.plan, keys.revisions, keys.tombstones, keys.rules,
                             keys.regions, keys.shapes]
        # Monitors named by notifications: id -> the revision a deletion removed (0: not one).
        self._changed: dict[str, int] = {}
        self.wake = asyncio.Event()

    def on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        monitor_id, _, deleted = str(payload).partition(":")
        if self.shard is not None and shard_of(monitor_id, self.shards) != self.keys.shard:
            return  # another shard's scheduler syncs it
        self._changed[monitor_id] = int(deleted or 0)
        self.wake.set()

    async def _upsert(self, rows: Sequence[asyncpg.Record]) -> int:
        """Write plans in batches of SYNC_BATCH, each batch with the shapes its plans name;
        the next batch is compiled while Redis runs the last ones. Batches hold different
        monitors and each call is atomic, so the order Redis runs them in does not matter."""
        pending: collections.deque[asyncio.Task[object]] = collections.deque()
        try:
            for start in range(0, len(rows), SYNC_BATCH):
                args = _sync_args(rows[start:start + SYNC_BATCH])
                if len(pending) == IN_FLIGHT:
                    await pending.popleft()
                pending.append(asyncio.ensure_future(self._sync(keys=self._script_keys,
                                                                args=args)))
                # Compiling runs without a pause: let the task send its call first, or it would
                # wait for the next batch to be compiled and Redis would idle meanwhile.
                await asyncio.sleep(0)
            for task in pending:
                await task
        finally:
            for task in pending:  # the calls still out when one failed
                task.cancel()
        return len(rows)

    async def _remove(self, removed: dict[str, int]) -> int:
        """Take monitors out, leaving tombstones; `removed` maps id -> revision deleted."""
        pairs = [value for item in removed.items() for value in item]
        for start in range(0, len(pairs), SYNC_BATCH * 2):
            await self._remove_script(keys=self._script_keys,
                                      args=pairs[start:start + SYNC_BATCH * 2])
        return len(removed)

    async def apply_changes(self) -> None:
        """Sync the monitors named by notifications since the last call."""
        changed, self._changed = self._changed, {}
        if not changed:
            return
        rows = await store.plan_rows(self.pool, list(changed), self.shard)
        await self._upsert(rows)
        live = {r["id"] for r in rows}
        removed = await self._remove({i: rev for i, rev in changed.items() if i not in live})
        # Deleted (a revision named), not paused: a paused job keeps its last heartbeat.
        await heartbeats.forget(self.r, self.keys, [i for i, rev in changed.items() if rev])
        log.info("monitors synced", upserted=len(rows), removed=removed, cause="notify")

    async def reconcile(self) -> None:
        wanted = await store.revisions(self.pool, self.shard)
        stored: dict[bytes, bytes] = await self.r.hgetall(  # type: ignore[assignment]
            self.keys.revisions)
        held = {k.decode(): int(v) for k, v in stored.items()}
        stale = [mid for mid, rev in wanted.items() if held.get(mid) != rev]
        stale += await self._undue([mid for mid in wanted if held.get(mid) == wanted[mid]])
        upserted = 0
        async with aclosing(self._plan_rows(stale)) as chunks:
            async for rows in chunks:
                upserted += await self._upsert(rows)
        planned: list[bytes] = await self.r.hkeys(self.keys.plan)  # type: ignore[assignment]
        in_redis = held.keys() | {k.decode() for k in planned}
        gone = list(in_redis - wanted.keys())
        removed = await self._remove(dict.fromkeys(gone, 0))
        await heartbeats.forget(self.r, self.keys,
                                set(gone) - await store.existing(self.pool, gone, self.shard))
        await self._prune_tombstones()
        await self._repair_regions()
        metrics.MONITORS.set(len(wanted))
        if upserted or removed:
            log.info("monitors synced", upserted=upserted, removed=removed, cause="reconcile")

    async def _plan_rows(self, ids: list[str]) -> AsyncGenerator[list[asyncpg.Record]]:
        """The plan rows of `ids`, FETCH_CHUNK at a time, each chunk read from Postgres while
        the last one is written to Redis."""
        chunks = [ids[start:start + FETCH_CHUNK] for start in range(0, len(ids), FETCH_CHUNK)]
        ahead: asyncio.Task[list[asyncpg.Record]] | None = None
        try:
            for chunk in chunks:
                last, ahead = ahead, asyncio.ensure_future(
                    store.plan_rows(self.pool, chunk, self.shard))
                if last is not None:
                    yield await last
            if ahead is not None:
                yield await ahead
        finally:
            if ahead is not None:
                ahead.cancel()

    async def _undue(self, ids: list[str]) -> list[str]:
        """Of monitors whose plan is current, the ones with no due entry (Redis lost it)."""
        missing: list[str] = []
        for start in range(0, len(ids), 5_000):
            chunk = ids[start:start + 5_000]
            scores = await self.r.zmscore(self.keys.due, chunk)
            missing += [mid for mid, score in zip(chunk, scores, strict=True) if score is None]
        return missing

    async def _repair_regions(self) -> None:
        """Make the regions set what the shard's enabled monitors name: put back what Redis
        lost, take out regions no monitor names any more. One taken out by a plan written in
        between is put back by the next reconcile, and dispatch.lua reports it meanwhile."""
        wanted = await store.regions(self.pool, self.shard)
        members: set[bytes] = await self.r.smembers(self.keys.regions)  # type: ignore[assignment]
        held = {m.decode() for m in members}
        if missing := wanted - held:
            await self.r.sadd(self.keys.regions, *missing)
        if unnamed := held - wanted:
            await self.r.srem(self.keys.regions, *unnamed)

    async def _prune_tombstones(self) -> None:
        cutoff = await redis_ms(self.r) - TOMBSTONE_KEEP_MS
        tombs: dict[bytes, bytes] = await self.r.hgetall(  # type: ignore[assignment]
            self.keys.tombstones)
        old = [mid for mid, stone in tombs.items() if int(stone.split(b":")[1]) < cutoff]
        if old:
            await self.r.hdel(self.keys.tombstones, *old)
