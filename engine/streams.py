"""The stream layer: consumer groups, bounded reads, acks, claims, dead letters, safe trimming."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ResponseError

from engine import metrics
from engine.clock import redis_ms
from engine.events import BadEvent
from engine.text import clip

T = TypeVar("T")
Fields = dict[bytes, bytes]
Entry = tuple[bytes, Fields]
# Every entry of every stream carries its event (engine.events) in this one field; the Lua
# scripts are handed the name rather than spelling it.
EVENT_FIELD = b"e"
DEADLETTER_MAXLEN = 100_000
REASON_MAX = 1_000
log = structlog.get_logger(component="streams")
DEAD_LETTER_LUA = resources.files("engine").joinpath("deadletter.lua").read_text()
KEEP_LUA = resources.files("engine").joinpath("keep.lua").read_text()
COMPLETE_LUA = resources.files("engine").joinpath("complete.lua").read_text()
CLAIM_LUA = resources.files("engine").joinpath("claim.lua").read_text()
RETRY_LUA = resources.files("engine").joinpath("retry.lua").read_text()
# Dead letters put back per call when all are retried: a bounded script run and reply.
RETRY_BATCH = 100
# A stream entry id as a client may send one: ms-seq.
ENTRY_ID_PATTERN = r"^[0-9]{1,20}-[0-9]{1,20}$"
# How many pending rows one claim looks at, per entry it may claim: the rows of live peers
# (spared) come first in id order after an outage, so it looks past them, within a bound.
CLAIM_LOOK_FACTOR = 10


def event_of(fields: Fields | None) -> bytes:
    """The event an entry carries (b"" for an entry without one: it fails to decode)."""
    return (fields or {}).get(EVENT_FIELD, b"")


async def ensure_group(r: aioredis.Redis, stream: str, group: str, start: str = "0") -> None:
    """Create the group (and the stream) if missing; safe to call from every process. A new
    group reads from `start`: "0" is the whole stream, "$" only what comes after."""
    try:
        await r.xgroup_create(stream, group, id=start, mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def parse_id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


@dataclass(slots=True)
class Delivery:
    """One entry as handed to this consumer, with how many times the group has delivered it
    (1 for a new entry; more after a restart under the same name or a claim)."""

    entry_id: bytes
    fields: Fields
    deliveries: int


class Consumer:
    """One consumer of one group, in bounded batches. After a restart under the same name
    (compose service names, StatefulSets, VIGIL_INSTANCE_ID) it first hands out the entries
    that name already held, each once, paging through its pending list; then new ones."""

    def __init__(self, r: aioredis.Redis, stream: str, group: str, name: str) -> None:
        self.r = r
        self.stream = stream
        self.group = group
        self.name = name
        # Where the next backlog page starts; None once the whole backlog was handed out.
        self._backlog_after: bytes | None = b"0"
        self._keep = r.register_script(KEEP_LUA)
        self._claim = r.register_script(CLAIM_LUA)

    async def read(self, count: int, block_ms: int | None) -> list[Delivery]:
        """At most `count` entries; waits up to `block_ms` for a new one (None: no wait)."""
        if self._backlog_after is not None:
            page = await self._xreadgroup(self._backlog_after, count, None)
            if page:
                self._backlog_after = page[-1][0]
                return await self._counted(await self._runnable(page))
            self._backlog_after = None
        return await self.read_new(count, block_ms)

    async def read_new(self, count: int, block_ms: int | None = None) -> list[Delivery]:
        """Entries no consumer of the group has read yet, at most `count`."""
        new = await self._runnable(await self._xreadgroup(">", count, block_ms))
        return [Delivery(eid, fields, 1) for eid, fields in new]

    async def _xreadgroup(self, start: bytes | str, count: int,
                          block_ms: int | None) -> list[tuple[bytes, Fields | None]]:
        try:
            reply: Any = await self.r.xreadgroup(self.group, self.name, {self.stream: start},
                                                 count=count, block=block_ms)
        except ResponseError as exc:
            await self._regroup(exc)
            return []
        return list(reply[0][1]) if reply else []

    async def _regroup(self, exc: ResponseError) -> None:
        """The group is gone (Redis restarted without its data, a failover lost it, an
        operator's FLUSHALL): make it again and go on; anything else is raised."""
        if not str(exc).startswith("NOGROUP"):
            raise exc
        log.warning("consumer group missing, recreated", stream=self.stream, group=self.group)
        await ensure_group(self.r, self.stream, self.group)
        self._backlog_after = None  # a new group holds nothing for this name

    async def _runnable(self, entries: list[tuple[bytes, Fields | None]]) -> list[Entry]:
        """Pending entries that were trimmed come back with no fields: nothing can run them,
        so they are acknowledged here."""
        await self.ack(*[eid for eid, fields in entries if fields is None])
        return [(eid, fields) for eid, fields in entries if fields is not None]

    async def _counted(self, entries: list[Entry]) -> list[Delivery]:
        """The group's delivery count of each entry, one XPENDING per entry in one round trip
        (a range query would be crowded by this consumer's other pending entries)."""
        async with self.r.pipeline(transaction=False) as pipe:
            for eid, _ in entries:
                pipe.xpending_range(self.stream, self.group, min=eid, max=eid, count=1)
            replies = await pipe.execute()
        counts = {p["message_id"]: int(p["times_delivered"]) for reply in replies for p in reply}
        return [Delivery(eid, fields, counts.get(eid, 1)) for eid, fields in entries]

    async def ack(self, *entry_ids: bytes) -> int:
        if not entry_ids:
            return 0
        return int(await self.r.xack(self.stream, self.group, *entry_ids))

    async def keep(self, entry_ids: list[bytes]) -> set[bytes]:
        """Work in progress stays this consumer's: of `entry_ids`, the ones it still owns get
        their idle time reset (a claim sweep takes only idle entries); returns those."""
        if not entry_ids:
            return set()
        kept: list[bytes] = await self._keep(keys=[self.stream],
                                             args=[self.group, self.name, *entry_ids])
        return set(kept)

    async def claim(self, min_idle_ms: int, count: int = 100,
                    spare: frozenset[str] = frozenset()) -> list[Delivery]:
        """Claim up to `count` entries idle past `min_idle_ms`, from any consumer but the ones
        in `spare` (engine/claim.lua), each with the delivery count it now has, so the caller
        can dead-letter the ones that keep failing."""
        try:
            reply: Any = await self._claim(
                keys=[self.stream],
                args=[self.group, self.name, min_idle_ms, count, count * CLAIM_LOOK_FACTOR,
                      *sorted(spare)])
        except ResponseError as exc:
            await self._regroup(exc)
            return []
        entries = [(eid, dict(zip(flat[::2], flat[1::2], strict=True)) if flat else None)
                   for eid, flat, _ in reply]
        counts = {eid: int(n) for eid, _, n in reply}
        return [Delivery(eid, fields, counts[eid]) for eid, fields in await self._runnable(entries)]


# One completed check: (entry id, result event, dead-letter reason or "", the entry's own
# event when it is dead-lettered, else b"").
Completed = tuple[bytes, bytes, str, bytes]


class Completions:
    """Acknowledges checks and writes their results in one atomic step (engine/complete.lua):
    a result is written only by the call whose XACK removed the entry, so a check finished
    twice (a stalled executor and the peer that claimed it) has one result."""

    def __init__(self, r: aioredis.Redis, checks: str, results: str, deadletter: str,
                 group: str) -> None:
        self.keys = [checks, results, deadletter]
        self.group = group
        self._script = r.register_script(DEAD_LETTER_LUA + COMPLETE_LUA)

    async def write(self, batch: list[Completed]) -> int:
        """How many of the batch were written (the others were acknowledged before)."""
        args: list[bytes | str | int] = [self.group, DEADLETTER_MAXLEN, EVENT_FIELD]
        for completed in batch:
            args += completed
        return int(await self._script(keys=self.keys, args=args))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter: its id on the dead-letter stream, the stream and id it came from, why,
    when (Redis time, ms), and the entry's event as it was (as text: an event that is not
    UTF-8 shows replacement characters; a retry sends the stored bytes)."""

    id: str
    stream: str
    entry_id: str
    reason: str
    at_ms: int
    payload: str


def _dead_letter(entry_id: bytes, fields: Fields) -> DeadLetter:
    def text(name: bytes) -> str:
        return fields.get(name, b"").decode(errors="replace")

    at = text(b"at")
    return DeadLetter(entry_id.decode(), text(b"stream"), text(b"id"), text(b"reason"),
                      int(at) if at.isdigit() else 0, text(b"payload"))


class DeadLetters:
    """The dead-letter stream: entries that could not be processed, kept with the stream and
    id they came from, the reason and their event, in the one shape of DEAD_LETTER_LUA (which
    engine/complete.lua shares, to dead-letter in the same step as its XACK); listed, put
    back on their stream (engine/retry.lua) or purged by an operator (engine.queue)."""

    def __init__(self, r: aioredis.Redis, key: str) -> None:
        self.r = r
        self.key = key
        self._script = r.register_script(
            DEAD_LETTER_LUA + "dead_letter(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])")
        self._retry = r.register_script(RETRY_LUA)

    async def add(self, stream: str, entry_id: bytes, payload: bytes, reason: str) -> None:
        await self._script(keys=[self.key], args=[DEADLETTER_MAXLEN, stream, entry_id,
                                                  clip(reason, REASON_MAX), payload])

    async def count(self) -> int:
        return int(await self.r.xlen(self.key))

    async def page(self, limit: int, after: str | None = None) -> list[DeadLetter]:
        """Up to `limit` dead letters, oldest first, after the dead letter `after`."""
        entries: list[Entry] = await self.r.xrange(  # type: ignore[assignment]
            self.key, min="-" if after is None else f"({after}", count=limit)
        return [_dead_letter(eid, fields) for eid, fields in entries]

    async def retry(self, *ids: str) -> int:
        """Put these dead letters back on their streams; how many were (an id that is not a
        dead letter any more is skipped)."""
        async with self.r.pipeline(transaction=False) as pipe:
            for dead_id in ids:
                pipe.xrange(self.key, min=dead_id, max=dead_id, count=1)
            found: list[list[Entry]] = await pipe.execute()
        return await self._put_back([entry for reply in found for entry in reply])

    async def retry_all(self) -> int:
        """Every dead letter there is when the call starts, in batches; one that comes while
        it runs (a retried entry that fails again) waits for the next call, so this ends."""
        newest: list[Entry] = await self.r.xrevrange(self.key, count=1)  # type: ignore[assignment]
        if not newest:
            return 0
        done, start = 0, "-"
        while True:
            page: list[Entry] = await self.r.xrange(  # type: ignore[assignment]
                self.key, min=start, max=newest[0][0], count=RETRY_BATCH)
            done += await self._put_back(page)
            if len(page) < RETRY_BATCH:
                return done
            start = f"({page[-1][0].decode()}"

    async def _put_back(self, entries: list[Entry]) -> int:
        """One script call per stream the entries came from: the script names that stream
        as a key (a Redis Cluster routes a call by its keys; every stream of a shard shares
        its slot)."""
        by_stream: dict[bytes, list[bytes]] = {}
        for eid, fields in entries:
            by_stream.setdefault(fields.get(b"stream", b""), []).append(eid)
        done = 0
        for stream, batch in by_stream.items():
            done += int(await self._retry(keys=[self.key, stream], args=[EVENT_FIELD, *batch]))
        return done

    async def purge(self, *ids: str) -> int:
        """Delete these dead letters; how many there were."""
        return int(await self.r.xdel(self.key, *ids)) if ids else 0

    async def purge_all(self) -> int:
        """Delete every dead letter; how many there were (counted in the same MULTI as the
        delete, so one added meanwhile is either counted and gone or kept)."""
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.xlen(self.key)
            pipe.delete(self.key)
            count, _ = await pipe.execute()
        return int(count)


async def decoded(deliveries: list[Delivery], decode: Callable[[bytes], T], consumer: Consumer,
                  deadletters: DeadLetters, who: str) -> list[tuple[bytes, T]]:
    """(entry id, event) of each delivery whose event decodes; one that does not is a bad
    message, never to be retried: dead-lettered with `who` and the reason, acknowledged and
    counted, and the rest goes on."""
    good: list[tuple[bytes, T]] = []
    for delivery in deliveries:
        raw = event_of(delivery.fields)
        try:
            good.append((delivery.entry_id, decode(raw)))
        except BadEvent as exc:
            log.error("bad entry dead-lettered", stream=consumer.stream, group=consumer.group,
                      entry_id=delivery.entry_id.decode(), error=str(exc))
            await deadletters.add(consumer.stream, delivery.entry_id, raw, f"{who}: {exc}")
            await consumer.ack(delivery.entry_id)
            metrics.DEAD_LETTERS.labels(consumer.stream).inc()
    return good


# A consumer that has not read for this long and holds nothing is gone (a restart under a
# host-pid name leaves one in every group each time); a live one reads every second.
IDLE_CONSUMER_MS = 15 * 60_000


async def forget_idle_consumers(r: aioredis.Redis, stream: str, group: str,
                                idle_ms: int = IDLE_CONSUMER_MS) -> int:
    """Delete the group's consumers idle past `idle_ms` that hold no pending entry."""
    try:
        consumers = await r.xinfo_consumers(stream, group)
    except ResponseError:
        return 0  # no stream or group yet
    gone = [c["name"] for c in consumers if int(c["pending"]) == 0 and int(c["idle"]) > idle_ms]
    for name in gone:
        await r.xgroup_delconsumer(stream, group, name)
    return len(gone)


# A group whose oldest unread entry is older than this is falling behind: worth a warning.
BEHIND_WARN_S = 60.0


class Upkeep:
    """A stream's periodic upkeep by one of its consumers (of `group`; `groups` are all the
    stream has): trim, forget gone consumers, and warn once when a group falls behind. (The
    gauges of streams and groups are read at scrape time: engine.exporter.)"""

    def __init__(self, r: aioredis.Redis, stream: str, group: str, groups: tuple[str, ...],
                 retention: tuple[int, int]) -> None:
        self.r = r
        self.stream = stream
        self.group = group
        self.groups = groups
        self.max_age_ms, self.max_len = retention
        self._behind: set[str] = set()

    async def __call__(self) -> None:
        await safe_trim(self.r, self.stream, self.groups)
        await self.retain()
        await forget_idle_consumers(self.r, self.stream, self.group)
        await self.measure()

    async def retain(self) -> int:
        """Past the safe trim, what is older than the retention or beyond its length goes
        too: a group that had not read it loses it, and the log says so."""
        cutoff = await redis_ms(self.r) - self.max_age_ms
        # Exact, not `~`: the bound is a promise, and it is rarely reached.
        trimmed = int(await self.r.xtrim(self.stream, minid=f"{cutoff}-0", approximate=False))
        trimmed += int(await self.r.xtrim(self.stream, maxlen=self.max_len, approximate=False))
        if trimmed:
            log.warning("stream trimmed to its retention; a group behind lost entries",
                        stream=self.stream, trimmed=trimmed, max_age_s=self.max_age_ms // 1000,
                        max_len=self.max_len)
        return trimmed

    async def measure(self) -> dict[str, float]:
        """Group name -> seconds its oldest unread entry has waited (entry ids are Redis
        time)."""
        try:
            groups = await self.r.xinfo_groups(self.stream)
        except ResponseError:
            return {}
        now_ms = await redis_ms(self.r)
        behind: dict[str, float] = {}
        for info in groups:
            name = info["name"].decode()
            # The first entry after the group's last delivered one: the oldest it has not read.
            unread: list[Entry] = await self.r.xrange(  # type: ignore[assignment]
                self.stream, min=f"({info['last-delivered-id'].decode()}", count=1)
            oldest_ms = parse_id(unread[0][0])[0] if unread else now_ms
            behind[name] = max(0.0, (now_ms - oldest_ms) / 1000)
            if behind[name] > BEHIND_WARN_S and name not in self._behind:
                log.warning("consumer group falling behind", stream=self.stream, group=name,
                            oldest_unread_s=round(behind[name]))
                self._behind.add(name)
            elif behind[name] <= BEHIND_WARN_S and name in self._behind:
                log.info("consumer group caught up", stream=self.stream, group=name)
                self._behind.discard(name)
        return behind


async def safe_trim(r: aioredis.Redis, stream: str, expected: tuple[str, ...] = ()) -> int:
    """Trim entries every group has acknowledged, and nothing else.

    The cut is the oldest entry still pending in any group, or a group's last delivered id
    when it has none pending; ids only grow, so a cut computed now stays safe after it. No
    cut while one of the `expected` groups is missing (lost with Redis's data and not made
    again yet): what it will read from the start must still be there.
    """
    try:
        groups = await r.xinfo_groups(stream)
    except ResponseError:
        return 0
    if not groups or not set(expected) <= {g["name"].decode() for g in groups}:
        return 0
    cuts: list[tuple[int, int]] = []
    for group in groups:
        name = group["name"]
        cut = parse_id(group["last-delivered-id"])
        if int(group["pending"]) > 0:
            summary = await r.xpending(stream, name)
            if summary["min"] is not None:
                cut = min(cut, parse_id(summary["min"]))
        cuts.append(cut)
    ms, seq = min(cuts)
    if (ms, seq) == (0, 0):
        return 0
    return int(await r.xtrim(stream, minid=f"{ms}-{seq}", approximate=True))
