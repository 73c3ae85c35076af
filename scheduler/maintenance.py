"""The scheduler's maintenance keeper: Redis's maintenance hash (engine.keys.Keys.maintenance,
monitor id -> `mode:end ms`) kept equal to the windows in effect now, for dispatch.lua to read.

It recomputes at each window's start and end and at least every `refresh_s`, at Redis time
(the clock dispatch.lua reads). Postgres is read every `refresh_s` too, but only the windows'
versions: a window is parsed again only when its version changed, and the parsed windows are
kept between reads. Every scheduler runs one; they compute the same hash from the same rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import asyncpg
import redis.asyncio as aioredis
import structlog
from pydantic import ValidationError

from engine import maintenance_store
from engine.clock import redis_ms
from engine.keys import Keys
from engine.maintenance import Window, in_effect, next_change
from engine.service import OUTAGES, Outage
from engine.shards import listed, shard_of

REFRESH_S = 5.0
# How far ahead the next start or end is looked for; past it, the refresh comes first anyway.
HORIZON_MS = 86_400_000
# A wake-up a few ms early would find the window not started yet and sleep again: at least this.
MIN_SLEEP_S = 0.005
RETRY_MAX_S = 10.0
log = structlog.get_logger(component="scheduler.maintenance")


class MaintenanceKeeper:
    def __init__(self, r: aioredis.Redis, pool: asyncpg.Pool, keys: Keys | Sequence[Keys],
                 refresh_s: float = REFRESH_S, shards: int = 1) -> None:
        """`keys`: the shards served, of `shards`; each shard's hash holds its monitors."""
        self.r = r
        self.pool = pool
        self.served = listed(keys)
        self.shards = shards
        self.refresh_s = refresh_s
        # id -> (version, the parsed window, or None for a stored one that no longer parses)
        self._windows: dict[str, tuple[int, Window | None]] = {}
        self._monitors: dict[str, list[str]] = {}
        self._outage = Outage("keeping maintenance windows")

    @property
    def windows(self) -> list[Window]:
        return [w for _, w in self._windows.values() if w is not None]

    async def load(self) -> None:
        """Parse the windows whose version changed since the last read; drop deleted ones;
        read the monitors' tags when there is a window to match them."""
        versions = await maintenance_store.versions(self.pool)
        for gone in self._windows.keys() - versions.keys():
            del self._windows[gone]
        changed = [wid for wid, v in versions.items() if self._windows.get(wid, (0,))[0] != v]
        for row in await maintenance_store.rows(self.pool, changed) if changed else []:
            try:
                window: Window | None = maintenance_store.window_of(row)
            except ValidationError as exc:
                # Written by a release with other rules: skipped (once per version), not fatal.
                log.error("stored maintenance window is invalid; skipped", window_id=row["id"],
                          error=str(exc))
                window = None
            self._windows[row["id"]] = (row["version"], window)
        self._monitors = await maintenance_store.monitor_tags(self.pool) if self._windows else {}

    async def publish(self, now_ms: int) -> None:
        """Make each shard's hash what the windows say at `now_ms` of its monitors; a hash that
        already is so stays untouched."""
        in_window = in_effect(self.windows, self._monitors, now_ms)
        for keys in self.served:
            wanted = {mid: v for mid, v in in_window.items()
                      if shard_of(mid, self.shards) == keys.shard}
            await self._replace(keys, wanted)

    async def _replace(self, keys: Keys, wanted: dict[str, str]) -> None:
        held: dict[bytes, bytes] = await self.r.hgetall(  # type: ignore[assignment]
            keys.maintenance)
        if {k.decode(): v.decode() for k, v in held.items()} == wanted:
            return
        # One MULTI: dispatch.lua never sees the hash half-replaced (or empty in between).
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(keys.maintenance)
            if wanted:
                pipe.hset(keys.maintenance, mapping=wanted)  # type: ignore[arg-type]
            await pipe.execute()
        log.info("monitors in maintenance changed", shard=keys.shard, monitors=len(wanted),
                 paused=sum(v.startswith("pause:") for v in wanted.values()))

    async def run(self, stop: asyncio.Event) -> None:
        loaded_at = -float("inf")
        delay = 0.2
        while not stop.is_set():
            try:
                if time.monotonic() - loaded_at >= self.refresh_s:
                    await self.load()
                    loaded_at = time.monotonic()
                now = await redis_ms(self.r)
                await self.publish(now)
                self._outage.ok()
                delay = 0.2
                change = next_change(self.windows, now, HORIZON_MS)
                wait = self.refresh_s - (time.monotonic() - loaded_at)
                if change is not None:
                    wait = min(wait, (change - now) / 1000)
            except OUTAGES as exc:
                self._outage.failed(exc)
                wait, delay = delay, min(delay * 2, RETRY_MAX_S)
            except Exception:
                # A bug or a schema this code does not know: logged, retried, never fatal to
                # the scheduler, which goes on dispatching.
                log.exception("keeping maintenance windows failed; retrying")
                wait, delay = delay, min(delay * 2, RETRY_MAX_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(wait, MIN_SLEEP_S))
