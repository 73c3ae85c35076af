"""Which executors serve which regions: each executor writes a heartbeat (its region, Redis
time) to keys.executors every HEARTBEAT_S, so a monitor for a region that nothing serves is
noticed when it is applied rather than found as silence later (regions are free-form: a typo
in one is enough for checks that never run), and a claim sweep leaves a live executor's work
alone however long its results wait for Redis."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis

from engine.keys import Keys

HEARTBEAT_S = 5.0
# An executor is alive while its last heartbeat is this recent; an entry is dropped after a
# day without one (an executor renamed or gone for good).
ALIVE_MS = 30_000
FORGET_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Seen:
    instance: str
    region: str
    seen_ms: int
    # Checks running at that beat and the executor's bound (engine.queue shows them); None
    # from a beat that did not say (an executor of an earlier release, during an upgrade).
    in_flight: int | None = None
    concurrency: int | None = None


async def beat(r: aioredis.Redis, keys: Keys, instance: str, region: str, now_ms: int,
               in_flight: int | None = None, concurrency: int | None = None) -> None:
    await r.hset(keys.executors, instance,
                 orjson.dumps({"region": region, "seen_ms": now_ms, "in_flight": in_flight,
                               "concurrency": concurrency}))


async def executors(r: aioredis.Redis, keys: Keys) -> list[Seen]:
    entries: dict[bytes, bytes] = await r.hgetall(keys.executors)  # type: ignore[assignment]
    out = []
    for instance, raw in entries.items():
        data = orjson.loads(raw)
        out.append(Seen(instance.decode(), str(data["region"]), int(data["seen_ms"]),
                        data.get("in_flight"), data.get("concurrency")))
    return out


def beat_every_s(window_ms: int) -> float:
    """How often to beat so that a peer judging by a `window_ms` window never takes this
    executor for dead while it runs: four beats per window, at most one per HEARTBEAT_S."""
    return min(HEARTBEAT_S, window_ms / 4000)


def alive(seen: list[Seen], now_ms: int, window_ms: int) -> frozenset[str]:
    """The executors that beat within the last `window_ms`."""
    return frozenset(s.instance for s in seen if now_ms - s.seen_ms <= window_ms)


def served(seen: list[Seen], now_ms: int) -> tuple[set[str], set[str]]:
    """(regions an executor serves now, regions one has ever served)."""
    return ({s.region for s in seen if now_ms - s.seen_ms <= ALIVE_MS},
            {s.region for s in seen})


async def forget_gone(r: aioredis.Redis, keys: Keys, now_ms: int) -> None:
    gone = [s.instance for s in await executors(r, keys) if now_ms - s.seen_ms > FORGET_MS]
    if gone:
        await r.hdel(keys.executors, *gone)
