"""The queue's facts, read from Redis: each stream's length and oldest entry, each group's
pending count, lag and consumers, the executors of each region, where dispatch is paused, and
whether each role keeps up. The operations API (api.queue), `vigil queue` and the scrape-time
gauges all read them here: per shard the regions (a set), then one script that reads every
stream, group and consumer inside Redis, so a scrape is a few round trips per shard however
many regions and monitors there are (bench/queue_stats.py).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio as aioredis

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
from engine.monitors import REGION_PATTERN
from engine.shards import listed
from engine.streams import BEHIND_WARN_S, ENTRY_ID_PATTERN, parse_id

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
STATS_LUA = resources.files("engine").joinpath("queue.lua").read_text()
# How many dead letters one page lists at most.
PAGE_MAX = 1_000


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
    shard: str
    length: int
    oldest_age_ms: int | None  # None when empty
    groups: tuple[GroupStats, ...]


async def _checks_streams(r: aioredis.Redis, keys: Keys, also: Iterable[str]) -> list[str]:
    """Every region's checks stream: the regions the shard's plans name (keys.regions, kept
    by the scheduler's sync), the ones its executors serve and `also`. A region that no
    executor has ever served (a typo) is the one whose backlog an operator must see; a region
    served with no monitor, the one whose idle executors they may wonder about."""
    named: set[bytes] = await r.smembers(keys.regions)  # type: ignore[assignment]
    regions = {region.decode() for region in named} | set(also)
    regions.update(seen.region for seen in await registry.executors(r, keys))
    return sorted(keys.checks(region) for region in regions)


async def stream_stats(r: aioredis.Redis, keys: Keys,
                       also: Iterable[str] = ()) -> list[StreamStats]:
    """Every stream of the shard (and the checks streams of the regions `also` names), its
    groups and their consumers: the regions, then one script call (engine/queue.lua) however
    many streams and groups."""
    streams = {key: f"checks:{key.removeprefix(keys.checks_prefix)}"
               for key in await _checks_streams(r, keys, also)}
    streams.update({keys.results: "results", keys.events: "events",
                    keys.deadletter: "deadletter"})
    seconds, micros, replies = await r.register_script(STATS_LUA)(keys=list(streams))
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    out = []
    for (key, name), reply in zip(streams.items(), replies, strict=True):
        if not reply:  # not made yet: no role has started on it
            out.append(StreamStats(name, key, keys.shard, 0, None, ()))
            continue
        length, first, groups = reply
        kind = name.partition(":")[0]
        out.append(StreamStats(
            name, key, keys.shard, int(length), None if first is None else _age(first, now_ms),
            tuple(_group(kind, group, now_ms) for group in groups)))
    return out


def _age(entry_id: bytes, now_ms: int) -> int:
    """How long ago the entry was added (its id is the Redis time it was added at)."""
    return max(0, now_ms - parse_id(entry_id)[0])


def _group(kind: str, reply: list[Any], now_ms: int) -> GroupStats:
    name, pending, lag, unread, consumers = reply
    group = name.decode()
    return GroupStats(group, ROLE_OF.get((kind, group)), int(pending),
                      None if lag is None else int(lag),
                      0 if unread is None else _age(unread, now_ms),
                      tuple(ConsumerStats(c.decode(), int(n), int(idle))
                            for c, n, idle in consumers))


@dataclass(frozen=True, slots=True)
class ExecutorStats:
    instance: str
    region: str
    seen_ms: int
    heartbeat_age_ms: int
    alive: bool
    in_flight: int | None
    concurrency: int | None


@dataclass(frozen=True, slots=True)
class RoleStats:
    """Whether the role reading one group keeps up: its oldest unread entry waited less than
    `KEEP_UP_MS` (`lag` is shown beside it)."""

    role: str
    stream: str
    group: str
    keeping_up: bool
    oldest_unread_age_ms: int
    lag: int | None


@dataclass(frozen=True, slots=True)
class QueueStats:
    streams: list[StreamStats]
    # Region -> its executors; an executor is alive while it beat within registry.ALIVE_MS.
    executors: dict[str, list[ExecutorStats]]
    # Region (or `*`, every region) -> since when dispatch to it is paused (Redis time, ms).
    paused: dict[str, int]
    # The scheduler's counters since the shard's start: dispatched, skipped (missed slots),
    # paused (maintenance), held (dispatch paused here), retried.
    dispatch: dict[str, int]
    dead_letters: int
    roles: list[RoleStats]
    keep_up_ms: int = KEEP_UP_MS


async def stats(r: aioredis.Redis, shards: Keys | Sequence[Keys]) -> QueueStats:
    """Everything the operations view shows, of every shard: per shard stream_stats, then
    one more round trip. An executor serving several shards is listed once (its latest
    beat); counters are summed; a region is paused since its earliest pause."""
    streams: list[StreamStats] = []
    seen: dict[tuple[str, str], registry.Seen] = {}
    paused_at: dict[str, int] = {}
    counters: Counter[str] = Counter()
    now_ms = 0
    for keys in listed(shards):
        streams += await stream_stats(r, keys)
        # TIME apart: a cluster pipeline routes by key, and TIME has none.
        now_ms = max(now_ms, await redis_ms(r))
        async with r.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.paused)
            pipe.hgetall(keys.stats)
            paused_raw, counts = await pipe.execute()
        for region, since in _counts(paused_raw).items():
            paused_at[region] = min(since, paused_at.get(region, since))
        counters.update(_counts(counts))
        for one in await registry.executors(r, keys):
            held = seen.get((one.instance, one.region))
            if held is None or one.seen_ms > held.seen_ms:
                seen[one.instance, one.region] = one
    executors: dict[str, list[ExecutorStats]] = {}
    for one in sorted(seen.values(), key=lambda s: s.instance):
        age = max(0, now_ms - one.seen_ms)
        executors.setdefault(one.region, []).append(ExecutorStats(
            one.instance, one.region, one.seen_ms, age, age <= registry.ALIVE_MS,
            one.in_flight, one.concurrency))
    roles = [RoleStats(group.role, stream.name, group.name, group.keeping_up,
                       group.oldest_unread_age_ms, group.lag)
             for stream in streams for group in stream.groups if group.role is not None]
    dead_letters = sum(s.length for s in streams if s.name == "deadletter")
    return QueueStats(streams, dict(sorted(executors.items())), dict(sorted(paused_at.items())),
                      dict(sorted(counters.items())), dead_letters, roles)


def _counts(raw: dict[bytes, bytes]) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in sorted(raw.items())}


def problems(snapshot: QueueStats) -> list[str]:
    """Why the queue is not healthy (none: it is): a role that does not keep up, a region with
    checks waiting and no executor alive. Dispatch paused is an operator's choice, shown in
    the stats, not a problem."""
    found = [f"{role.role} is behind: the oldest entry group {role.group!r} has not read on "
             f"{role.stream} waited {role.oldest_unread_age_ms // 1000} s (the bound is "
             f"{snapshot.keep_up_ms // 1000} s)" for role in snapshot.roles if not role.keeping_up]
    for stream in snapshot.streams:
        kind, _, region = stream.name.partition(":")
        waiting = any(g.pending or g.lag for g in stream.groups)
        alive = any(e.alive for e in snapshot.executors.get(region, []))
        if kind == "checks" and waiting and not alive:
            found.append(f"region {region!r}: checks are waiting and no executor is alive "
                         "(the scheduler expires them past their deadline)")
    return found


@dataclass(frozen=True, slots=True)
class Health:
    healthy: bool
    problems: list[str]
    roles: list[RoleStats]
    paused: dict[str, int]
    keep_up_ms: int


def health_of(stats: QueueStats) -> Health:
    found = problems(stats)
    return Health(not found, found, stats.roles, stats.paused, stats.keep_up_ms)


async def paused(r: aioredis.Redis, keys: Keys) -> dict[str, int]:
    return _counts(await r.hgetall(keys.paused))  # type: ignore[arg-type]


async def pause(r: aioredis.Redis, shards: Keys | Sequence[Keys],
                region: str | None) -> dict[str, int]:
    """Stop dispatch to `region` (None: every region) from the schedulers' next call on, in
    every shard; a region paused already keeps the time it was paused at. Returns what is
    paused now (the first shard's view)."""
    every = listed(shards)
    now = await redis_ms(r)
    for keys in every:
        await r.hsetnx(keys.paused, region or ALL_REGIONS, now)
    return await paused(r, every[0])


async def resume(r: aioredis.Redis, shards: Keys | Sequence[Keys],
                 region: str | None) -> dict[str, int]:
    """Dispatch to `region` again (None: every pause goes, each region's too), from its next
    slot, in every shard. Returns what is still paused (a region stays paused while every
    region is)."""
    every = listed(shards)
    for keys in every:
        if region is None:
            await r.delete(keys.paused)
        else:
            await r.hdel(keys.paused, region)
    return await paused(r, every[0])


def region_of(text: str) -> str:
    """A region as an operator names it to pause or resume; a ValueError says what a region
    is (a monitor's region follows the same rule)."""
    if not re.fullmatch(REGION_PATTERN, text):
        raise ValueError(f"{text!r} is not a region: 1 to 32 letters, digits, '_' or '-'")
    return text


def page_size(text: str) -> int:
    """How many entries a listing (dead letters, monitors) gives, as a client asks it; a
    ValueError says what fits."""
    if not text.isdigit() or not 1 <= int(text) <= PAGE_MAX:
        raise ValueError(f"expected a whole number from 1 to {PAGE_MAX}")
    return int(text)


def dead_letter_id(text: str) -> str:
    """A dead letter's id (a stream entry id, ms-seq); a ValueError says so otherwise. Each
    part stays below 2**63, so Redis takes it in any range, exclusive ones included."""
    if not re.fullmatch(ENTRY_ID_PATTERN, text) or max(parse_id(text)) >= 2**63:
        raise ValueError(f"{text!r} is not a dead letter's id (like 1767225600000-0)")
    return text
