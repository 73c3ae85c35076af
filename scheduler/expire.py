"""Checks nobody will run are recorded as `expired`, so accounting holds with no executor at
all: a region that no executor serves (none ever started there, a typo in a region, all of
its executors gone) gets, for every check past its deadline, an `expired` result written with
its acknowledgement, exactly as an executor writes one. A region an executor serves is left
alone: its executors expire late checks themselves. An executor's work is never taken while
it beats, and the expirer judges only once it has itself reached Redis steadily for the
window it judges by: after an outage every heartbeat is as old as the outage."""

from __future__ import annotations

from typing import Any

import asyncpg
import redis.asyncio as aioredis
import structlog

from engine import registry, store
from engine.clock import RedisClock
from engine.events import BadEvent, CheckDue, CheckResult, Observation
from engine.keys import EXECUTOR_GROUP, Keys
from engine.service import Steady
from engine.streams import (
    Completed,
    Completions,
    Consumer,
    DeadLetters,
    Delivery,
    Entry,
    ensure_group,
    event_of,
    parse_id,
)

EXPIRER = "vigil-expirer"
BATCH = 500
EVERY_S = 5.0  # how often the scheduler runs it
log = structlog.get_logger(component="scheduler.expire")


class Expirer:
    def __init__(self, r: aioredis.Redis, pool: asyncpg.Pool, keys: Keys,
                 claim_idle_ms: int, watch_ms: int = registry.ALIVE_MS) -> None:
        self.r = r
        self.pool = pool
        self.keys = keys
        self.claim_idle_ms = claim_idle_ms
        self.clock = RedisClock(r)
        self.deadletters = DeadLetters(r, keys.deadletter)
        self.watch_ms = watch_ms
        self.steady = Steady(2 * EVERY_S)

    async def run_once(self) -> int:
        """Expire what is due in every region nothing serves; how many were expired."""
        await self.clock.sync()
        self.steady.ok()
        if self.steady.for_ms() < self.watch_ms:
            return 0
        now = self.clock.now_ms()
        seen = await registry.executors(self.r, self.keys)
        live, _ = registry.served(seen, now)
        spare = registry.alive(seen, now, registry.ALIVE_MS)
        expired = 0
        for region in sorted(await store.regions(self.pool) - live):
            expired += await self._expire(region, now, spare)
        return expired

    async def _expire(self, region: str, now: int, spare: frozenset[str]) -> int:
        stream = self.keys.checks(region)
        await ensure_group(self.r, stream, EXECUTOR_GROUP)
        consumer = Consumer(self.r, stream, EXECUTOR_GROUP, EXPIRER)
        # What a vanished executor held, then what nobody has read, as far as it is past due.
        taken = await consumer.claim(self.claim_idle_ms, count=BATCH, spare=spare)
        unread = await self._unread_past_deadline(stream, now)
        taken += await consumer.read_new(unread) if unread else []
        done: list[Completed] = []
        for delivery in taken:
            result = await self._expired(stream, consumer, delivery, region, now)
            if result is not None:
                done.append(result)
        written = await Completions(self.r, stream, self.keys.results, self.keys.deadletter,
                                    EXECUTOR_GROUP).write(done) if done else 0
        if written:
            log.warning("checks expired: no executor serves their region", region=region,
                        expired=written)
        return written

    async def _unread_past_deadline(self, stream: str, now: int) -> int:
        """How many of the oldest unread entries are past their deadline, in a row (entries
        come in dispatch order: a slot later than ~now is not looked at)."""
        groups: list[dict[str, Any]] = await self.r.xinfo_groups(stream)
        last = next(g["last-delivered-id"] for g in groups if g["name"] == EXECUTOR_GROUP.encode())
        entries: list[Entry] = await self.r.xrange(  # type: ignore[assignment]
            stream, min=f"({last.decode()}", count=BATCH)
        count = 0
        for entry_id, fields in entries:
            try:
                deadline = CheckDue.from_json(event_of(fields)).deadline_ms
            except BadEvent:
                deadline = parse_id(entry_id)[0]  # not a check: dead-lettered when read
            if deadline > now:
                break
            count += 1
        return count

    async def _expired(self, stream: str, consumer: Consumer, delivery: Delivery, region: str,
                       now: int) -> Completed | None:
        try:
            due = CheckDue.from_json(event_of(delivery.fields))
        except BadEvent as exc:
            await self.deadletters.add(stream, delivery.entry_id, event_of(delivery.fields),
                                       str(exc))
            await consumer.ack(delivery.entry_id)
            return None
        if due.deadline_ms > now:
            return None  # a peer's unread entry that is still due: left for an executor
        obs = Observation(outcome="expired", error_kind="expired",
                          error=f"no executor serves region {region!r}; past its deadline")
        result = CheckResult.of(due, obs, started_ms=now, finished_ms=now, executor=EXPIRER,
                                deliveries=delivery.deliveries)
        return delivery.entry_id, result.to_json(), "", b""
