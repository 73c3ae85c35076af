"""The queue's facts, read from Redis: each stream's length and oldest entry, each group's
pending count, lag and consumers, the executors of each region, where dispatch is paused, and
whether each role keeps up. The operations API (api.queue), `vigil queue` and the scrape-time
gauges all read them here, in a fixed number of pipelined round trips however many streams
and groups there are, so a scrape costs Redis the same on ten regions as on one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from engine import registry
from engine.clock import redis_ms
from engine.keys import (
    CLICKHOUSE_GROUP,
    EVALUATOR_GROUP,
    EVENTS_CLICKHOUSE_GROUP,
    EXECUTOR_GROUP,
    NOTIFIER_GROUP,
    PROJECTION_GROUP,
    STATUS_GROUP,
    Keys,
)
from engine.streams import BEHIND_WARN_S, parse_id

# The role that reads each group, by the stream's kind (`checks` for every region's): what an
# operator starts or scales when its group falls behind (vigil/roles.py names them).
ROLE_OF = {("checks", EXECUTOR_GROUP): "executor",
           ("results", CLICKHOUSE_GROUP): "sink-clickhouse",
           ("results", STATUS_GROUP): "sink-status",
           ("results", EVALUATOR_GROUP): "evaluator",
           ("events", NOTIFIER_GROUP): "notifier",
           ("events", PROJECTION_GROUP): "sink-incidents",
           ("events", EVENTS_CLICKHOUSE_GROUP): "sink-status-events"}
# A role keeps up while its group's oldest unread entry has waited less than this (the
# stream layer warns past the same bound); lag in entries is shown, not judged: what is a
# backlog at one rate is a second's work at another.
KEEP_UP_MS = int(BEHIND_WARN_S * 1000)
ALL_REGIONS = "*"
SCAN_COUNT = 1_000


@dataclass(frozen=True, slots=True)
class ConsumerStats:
    name: str
    pending: int
    idle_ms: int


@dataclass(frozen=True, slots=True)
class GroupStats:
    name: str
    role: str | None
    pending: int
    # Entries not read yet; None when Redis cannot count them (an entry deleted inside the
    # unread range), the age below still tells.
    lag: int | None
    oldest_unread_age_ms: int
    consumers: tuple[ConsumerStats, ...]

    @property
    def keeping_up(self) -> bool:
        return self.oldest_unread_age_ms < KEEP_UP_MS


@dataclass(frozen=True, slots=True)
class StreamStats:
    name: str  # `checks:<region>`, `results`, `events` or `deadletter`
    key: str
    length: int
    oldest_age_ms: int | None  # None when empty
    groups: tuple[GroupStats, ...]


async def _checks_streams(r: aioredis.Redis, keys: Keys) -> list[str]:
    """Every region's checks stream, found in Redis rather than from the registry: a region
    that no executor has ever served (a typo) is the one whose backlog an operator must see."""
    found = [key.decode() async for key in r.scan_iter(match=f"{keys.checks_prefix}*",
                                                       count=SCAN_COUNT, _type="STREAM")]
    return sorted(found)


async def stream_stats(r: aioredis.Redis, keys: Keys) -> list[StreamStats]:
    """Every stream of the shard, its groups and their consumers: a scan, then two pipelined
    round trips."""
    streams = {key: f"checks:{key.removeprefix(keys.checks_prefix)}"
               for key in await _checks_streams(r, keys)}
    streams.update({keys.results: "results", keys.events: "events",
                    keys.deadletter: "deadletter"})
    async with r.pipeline(transaction=False) as pipe:
        pipe.time()
        for key in streams:
            pipe.xinfo_stream(key)
            pipe.xinfo_groups(key)
        first: list[Any] = await pipe.execute(raise_on_error=False)
    seconds, micros = first[0]
    now_ms = seconds * 1000 + micros // 1000
    infos = {key: (first[1 + 2 * i], first[2 + 2 * i]) for i, key in enumerate(streams)}
    # A stream not made yet (no role has started on it) answers an error: it is empty.
    groups_of = {key: [] if isinstance(groups, ResponseError) else groups
                 for key, (_, groups) in infos.items()}
    async with r.pipeline(transaction=False) as pipe:
        for key, groups in groups_of.items():
            for group in groups:
                # The entry after the group's last delivered one: the oldest it has not read.
                pipe.xrange(key, min=f"({group['last-delivered-id'].decode()}", count=1)
                pipe.xinfo_consumers(key, group["name"])
        second: Iterator[Any] = iter(await pipe.execute(raise_on_error=False))
    out = []
    for key, name in streams.items():
        info, _ = infos[key]
        kind = name.partition(":")[0]
        groups = tuple(_group(kind, group, next(second), next(second), now_ms)
                       for group in groups_of[key])
        if isinstance(info, ResponseError):
            out.append(StreamStats(name, key, 0, None, ()))
            continue
        head = info["first-entry"]
        oldest = None if head is None else max(0, now_ms - parse_id(head[0])[0])
        out.append(StreamStats(name, key, int(info["length"]), oldest, groups))
    return out


def _group(kind: str, info: dict[str, Any], unread: Any, consumers: Any,
           now_ms: int) -> GroupStats:
    name = info["name"].decode()
    found = unread and not isinstance(unread, ResponseError)
    oldest_ms = parse_id(unread[0][0])[0] if found else now_ms
    shown = () if isinstance(consumers, ResponseError) else tuple(
        ConsumerStats(c["name"].decode(), int(c["pending"]), int(c["idle"])) for c in consumers)
    lag = info.get("lag")
    return GroupStats(name, ROLE_OF.get((kind, name)), int(info["pending"]),
                      None if lag is None else int(lag), max(0, now_ms - oldest_ms), shown)


@dataclass(frozen=True, slots=True)
class ExecutorStats:
    instance: str
    region: str
    seen_ms: int
    heartbeat_age_ms: int
    alive: bool


async def executor_stats(r: aioredis.Redis, keys: Keys) -> list[ExecutorStats]:
    """Every executor the registry knows, by region, with its last heartbeat (Redis time)."""
    seen = await registry.executors(r, keys)
    now_ms = await redis_ms(r)
    return sorted((ExecutorStats(s.instance, s.region, s.seen_ms, max(0, now_ms - s.seen_ms),
                                 now_ms - s.seen_ms <= registry.ALIVE_MS) for s in seen),
                  key=lambda e: (e.region, e.instance))
