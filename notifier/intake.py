"""The notifier's intake: events from the events stream (group NOTIFIER_GROUP) become
deliveries in the Postgres outbox, then are acknowledged.

One notifier at a time reads, the one holding a Postgres advisory lock, and it writes through
the connection that holds it: events are taken in stream order (a resolve is never handled
before its open by a peer), and an intake that lost its connection cannot write anymore.
The others wait to take over, and the new one first claims what its predecessor read and
did not acknowledge. Each batch is written in one transaction and acknowledged after it: a
crash in between reads the batch again, and its deliveries' keys insert nothing new.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib

import asyncpg
import redis.asyncio as aioredis
import structlog

from engine import channels, metrics
from engine.cache import MISS, BoundedCache
from engine.channels import GONE, NewDelivery, OpenAlert, delivery_key
from engine.events import Event
from engine.keys import EVENT_GROUPS, NOTIFIER_GROUP, Keys
from engine.service import Outage
from engine.streams import Consumer, DeadLetters, Delivery, Upkeep, decoded, ensure_group
from notifier.messages import Step, payload, steps

# "NOTIF" in ASCII: one intake per database (engine.migrate holds "VIGIL").
INTAKE_LOCK = 0x4E_4F_54_49_46
BATCH = 100
# A monitor's tags and channels change rarely: seconds of staleness save a query per batch.
ROUTING_TTL_S = 5.0
ROUTING_MAX = 10_000
log = structlog.get_logger(component="notifier")


class Intake:
    def __init__(self, r: aioredis.Redis, keys: Keys, dsn: str, name: str, max_attempts: int,
                 retention: tuple[int, int]) -> None:
        self.r = r
        self.keys = keys
        self.dsn = dsn
        self.name = name
        self.max_attempts = max_attempts
        self.consumer = Consumer(r, keys.events, NOTIFIER_GROUP, name)
        self.deadletters = DeadLetters(r, keys.deadletter)
        self.upkeep = Upkeep(r, keys.events, NOTIFIER_GROUP, EVENT_GROUPS, retention)
        self._routing: BoundedCache[str, tuple[list[str], list[str]]] = BoundedCache(
            ROUTING_MAX, ROUTING_TTL_S)
        self.outage = Outage("notifier intake", shard=keys.shard)
        # One intake at a time per shard: shard 0 keeps the lock of a single-shard deployment.
        self.lock_id = INTAKE_LOCK + zlib.crc32(keys.shard.encode()) * (keys.shard != "0")

    async def run(self, stop: asyncio.Event) -> None:
        # At `$`: a notifier added to a stream with history does not send that history.
        await ensure_group(self.r, self.keys.events, NOTIFIER_GROUP, start="$")
        while not stop.is_set():
            try:
                await self._lead(stop)
            except GONE as exc:
                self.outage.failed(exc)
                await pause(stop, 1.0)

    async def _lead(self, stop: asyncio.Event) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(self.dsn)
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.lock_id):
                self.outage.ok()
                if await pause(stop, 2.0):
                    return
            log.info("notifier intake leads", consumer=self.name)
            # The predecessor is gone (its lock with it): what it held is ours, oldest first.
            while taken := await self.consumer.claim(0, count=BATCH,
                                                     spare=frozenset({self.name})):
                await self._handle(conn, taken)
            while not stop.is_set():
                batch = await self.consumer.read(BATCH, 1000)
                self.outage.ok()
                await self._handle(conn, batch)
        finally:
            with contextlib.suppress(*GONE):
                await conn.close(timeout=5)

    async def _handle(self, conn: asyncpg.Connection, batch: list[Delivery]) -> None:
        good = await decoded(batch, Event.from_json, self.consumer, self.deadletters,
                             "notifier")
        if not good:
            return
        try:
            async with conn.transaction():
                await self._write(conn, [event for _, event in good])
        except GONE:
            raise
        except Exception:
            # One event the database refuses must not hold back the others: one by one, and
            # the one that fails is dead-lettered.
            for entry_id, event in good:
                try:
                    async with conn.transaction():
                        await self._write(conn, [event])
                except GONE:
                    raise
                except Exception as exc:
                    log.exception("event not turned into deliveries", event_id=event.id)
                    await self._dead_letter(entry_id, event.to_json(), repr(exc))
        await self.consumer.ack(*[entry_id for entry_id, _ in good])

    async def _dead_letter(self, entry_id: bytes, raw: bytes, reason: str) -> None:
        log.error("event dead-lettered", entry_id=entry_id.decode(), error=reason)
        await self.deadletters.add(self.keys.events, entry_id, raw, f"notifier: {reason}")
        await self.consumer.ack(entry_id)
        metrics.DEAD_LETTERS.labels(self.keys.events).inc()

    async def _write(self, conn: asyncpg.Connection, events: list[Event]) -> None:
        """The batch's deliveries and open alerts, in stream order; routing is read once per
        batch (a monitor's for a few seconds, ROUTING_TTL_S)."""
        routing: dict[str, tuple[list[str], list[str]]] = {}
        for monitor_id in {e.monitor_id for e in events}:
            if (hit := self._routing.get(monitor_id)) is not MISS:
                routing[monitor_id] = hit
        loaded = await channels.routing(conn, sorted({e.monitor_id for e in events} - set(routing)))
        for monitor_id, found in loaded.items():
            self._routing.put(monitor_id, found)
        routing.update(loaded)
        routes = await channels.enabled(conn)
        deliveries: list[NewDelivery] = []
        opened: list[OpenAlert] = []
        for event in events:
            tags, named = routing[event.monitor_id]
            for step in steps(event):
                if step.opens:
                    targets = [c.id for c in routes if c.takes(step.route, tags, named)]
                    if targets:
                        body = payload(event, step.message)
                        deliveries += self._deliveries(event, step, body, targets)
                        opened.append(OpenAlert(event.monitor_id, step.alert, step.subject,
                                                body, targets))
                    continue
                # An end reads the open alerts: the ones this batch opened are written first.
                await channels.open_alerts(conn, opened)
                opened = []
                got = await channels.close_alert(conn, event.monitor_id, step.alert,
                                                 step.subject)
                # An incident's resolve goes to the channels that got its open and take `up`.
                targets = [c for c, taken in got if step.alert != "incident" or "up" in taken]
                deliveries += self._deliveries(event, step, payload(event, step.message),
                                               targets)
        await channels.open_alerts(conn, opened)
        await channels.add(conn, deliveries, self.max_attempts)

    @staticmethod
    def _deliveries(event: Event, step: Step, body: dict[str, object],
                    targets: list[str]) -> list[NewDelivery]:
        return [NewDelivery(key=delivery_key(f"{event.id}/{step.message}", c), channel_id=c,
                            event_id=event.id, message=step.message, monitor_id=event.monitor_id,
                            payload=body) for c in targets]


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds`; True when stopped meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()
