"""What every sink shares: read a stream's events in batches (by size and by time), write,
then ack. The results sinks (check_results, monitor_status) read the results stream; the
projections (incidents, status_events) read the events stream: each reads one stream's events
through one base, so batching, retries, dead letters and claims behave the same everywhere.

Acks follow the write, so a crash in between redelivers the batch; each sink's write is
idempotent, so a redelivered event never counts twice. A write that fails for a transient
reason is retried until it succeeds or the sink stops (entries stay pending, nothing is
lost); one that fails for a permanent reason is split to find the bad events, which go to
the dead-letter stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from typing import Any, Generic, Protocol, TypeVar

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from engine import metrics
from engine.events import CheckResult, Event
from engine.keys import EVENT_GROUPS, RESULT_GROUPS, Keys
from engine.service import Outage, every
from engine.settings import Settings
from engine.streams import Consumer, DeadLetters, Delivery, Upkeep, decoded, ensure_group

RETRY_MAX_S = 10.0
COLLECT_POLL_S = 0.05
TRIM_EVERY_S = 10.0
log = structlog.get_logger(component="sink")


class Item(Protocol):
    """What a sink writes: an event of its stream, rendered back to JSON for a dead letter."""

    monitor_id: str

    def to_json(self) -> bytes: ...


T = TypeVar("T", bound=Item)


class StreamSink(ABC, Generic[T]):
    """One consumer group of one stream, written in batches; a subclass names the stream and
    its event type (BatchSink, EventSink) and the writing."""

    name: str
    group: str
    # What the stream carries, in log lines ("result", "event").
    noun: str

    def __init__(self, r: aioredis.Redis, keys: Keys, settings: Settings) -> None:
        self.r = r
        self.keys = keys
        self.settings = settings
        self.stream = self.stream_of(keys)
        self.consumer = Consumer(r, self.stream, self.group, settings.instance_id)
        self.deadletters = DeadLetters(r, keys.deadletter)
        # Entries this sink is writing (or retrying); its own sweep leaves them alone.
        self._held: set[bytes] = set()
        self._reading = Outage(f"reading {self.noun}s", sink=self.name)
        self._writing = Outage(f"writing {self.noun}s", sink=self.name)
        self._stop = asyncio.Event()

    @staticmethod
    @abstractmethod
    def stream_of(keys: Keys) -> str:
        """The stream this sink reads."""

    @staticmethod
    @abstractmethod
    def groups() -> tuple[str, ...]:
        """Every group of that stream: the trim keeps what any of them has not acknowledged."""

    @staticmethod
    @abstractmethod
    def decode(raw: bytes) -> T:
        """The entry's event; BadEvent dead-letters it."""

    @staticmethod
    @abstractmethod
    def identity(item: T) -> dict[str, Any]:
        """The ids a log line about one item names."""

    @abstractmethod
    async def write(self, items: list[T]) -> None:
        """Write idempotently; raise to have the batch retried."""

    @abstractmethod
    def transient(self, exc: Exception) -> bool:
        """True when retrying the same write later can succeed (the database is away)."""

    async def start(self) -> None:
        """Open connections before the first batch."""

    async def close(self) -> None:
        """Close connections after the last batch."""

    async def _collect(self, stop: asyncio.Event) -> list[Delivery]:
        """Up to sink_batch_size entries, waiting at most sink_flush_ms after the first.

        After the first entry it polls every COLLECT_POLL_S without blocking: a blocking read
        would return at every single new entry, one round trip per entry.
        """
        size = self.settings.sink_batch_size
        batch = await self.consumer.read(size, 1000)
        deadline = time.monotonic() + self.settings.sink_flush_ms / 1000
        while batch and len(batch) < size and not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(left, COLLECT_POLL_S))
            batch += await self.consumer.read(size - len(batch), None)
        return batch

    async def _decode(self, entries: list[Delivery]) -> list[tuple[bytes, T]]:
        return await decoded(entries, self.decode, self.consumer, self.deadletters, self.name)

    async def _write_all(self, items: list[tuple[bytes, T]], stop: asyncio.Event) -> None:
        self._held.update(entry_id for entry_id, _ in items)
        try:
            await self._write_until_done(items, stop)
        finally:
            self._held.difference_update(entry_id for entry_id, _ in items)

    async def _write_until_done(self, items: list[tuple[bytes, T]], stop: asyncio.Event) -> None:
        delay = 0.2
        while True:
            try:
                with metrics.SINK_BATCH.labels(self.name).time():
                    await self.write([item for _, item in items])
                self._writing.ok()
                break
            except Exception as exc:
                if not self.transient(exc):
                    await self._split(items, exc, stop)
                    return
                self._writing.failed(exc)
                if stop.is_set():
                    log.warning("stopping with a batch unwritten; it stays pending",
                                sink=self.name, batch=len(items))
                    return
                # Still ours while the outage lasts: no sweep (ours or a peer's) takes the batch
                # to write it a second time; an entry a peer took meanwhile is the peer's now.
                kept = await self.consumer.keep([entry_id for entry_id, _ in items])
                items = [item for item in items if item[0] in kept]
                if not items:
                    return
                await asyncio.sleep(min(delay, self.settings.claim_idle_ms / 2000))
                delay = min(delay * 2, RETRY_MAX_S)
        await self.consumer.ack(*[entry_id for entry_id, _ in items])
        metrics.SINK_ROWS.labels(self.name).inc(len(items))
        metrics.SINK_BATCH_ROWS.labels(self.name).observe(len(items))

    async def _split(self, items: list[tuple[bytes, T]], exc: Exception,
                     stop: asyncio.Event) -> None:
        if len(items) > 1:
            half = len(items) // 2
            await self._write_all(items[:half], stop)
            await self._write_all(items[half:], stop)
            return
        entry_id, item = items[0]
        log.error(f"{self.noun} rejected, dead-lettered", sink=self.name, **self.identity(item),
                  monitor_id=item.monitor_id, error=repr(exc))
        await self.deadletters.add(self.stream, entry_id, item.to_json(),
                                   f"{self.name}: {exc!r}")
        await self.consumer.ack(entry_id)
        metrics.DEAD_LETTERS.labels(self.stream).inc()

    async def sweep(self) -> None:
        """Take over entries a crashed sink of the same group read but never acknowledged."""
        claimed = [d for d in await self.consumer.claim(self.settings.claim_idle_ms,
                                                         count=self.settings.sink_batch_size)
                   if d.entry_id not in self._held]  # what this sink is still writing
        if not claimed:
            return
        metrics.CLAIMED.labels(self.stream).inc(len(claimed))
        log.info(f"claimed stalled {self.noun}s", sink=self.name, count=len(claimed))
        await self._write_all(await self._decode(claimed), self._stop)

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                entries = await self._collect(stop)
                self._reading.ok()
                if entries:
                    await self._write_all(await self._decode(entries), stop)
            except RedisError as exc:
                self._reading.failed(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        await ensure_group(self.r, self.stream, self.group)
        await self.start()
        log.info("sink started", sink=self.name, batch=self.settings.sink_batch_size,
                 flush_ms=self.settings.sink_flush_ms)
        try:
            await asyncio.gather(
                self._loop(stop),
                every(max(0.5, self.settings.claim_idle_ms / 4000), stop, self.sweep, "claim"),
                every(TRIM_EVERY_S, stop,
                      Upkeep(self.r, self.stream, self.group, self.groups(),
                             self.settings.retention), "upkeep"),
            )
        finally:
            await self.close()
        log.info("sink stopped", sink=self.name)


class BatchSink(StreamSink[CheckResult], ABC):
    """A sink of the results stream (check.result events)."""

    noun = "result"

    @staticmethod
    def stream_of(keys: Keys) -> str:
        return keys.results

    @staticmethod
    def groups() -> tuple[str, ...]:
        return RESULT_GROUPS

    @staticmethod
    def decode(raw: bytes) -> CheckResult:
        return CheckResult.from_json(raw)

    @staticmethod
    def identity(item: CheckResult) -> dict[str, Any]:
        return {"check_id": item.check_id}


class EventSink(StreamSink[Event], ABC):
    """A projection of the events stream (engine.events.Event, written by the evaluator)."""

    noun = "event"

    @staticmethod
    def stream_of(keys: Keys) -> str:
        return keys.events

    @staticmethod
    def groups() -> tuple[str, ...]:
        return EVENT_GROUPS

    @staticmethod
    def decode(raw: bytes) -> Event:
        return Event.from_json(raw)

    @staticmethod
    def identity(item: Event) -> dict[str, Any]:
        return {"event_id": item.id}
