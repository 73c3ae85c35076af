"""Live status pages: `GET /status/{page_id}/events`, Server-Sent Events of the page's
monitors' status changes and incidents, fed from the events stream.

One reader per process reads the stream with plain XREAD (no consumer group: every API
replica must see every event, and none of them acknowledges anything) and hands each event
to the subscribers whose page shows its monitor. What a client gets is public only: a status
and since when, an incident's id and times; never an error text.

Bounded: each client has a queue of QUEUE_MAX frames, and a client that falls that far
behind is dropped (its browser reconnects, and the page's script loads the page afresh for
what it missed); at most STREAMS_MAX streams are open per process; a comment goes
out every KEEPALIVE_S so proxies keep an idle stream open. A Redis outage is one warning and
reads retried with backoff; open streams stay open meanwhile and go on where the reader
stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog
from aiohttp import web
from redis.exceptions import RedisError

from api.errors import json_error
from api.state import PG, REDIS, SHARDS
from engine import status_pages, store
from engine.events import INCIDENT_OPENED, INCIDENT_RESOLVED, MONITOR_CHANGED, BadEvent, Event
from engine.streams import EVENT_FIELD

STREAMS_MAX = 1_000
QUEUE_MAX = 64
KEEPALIVE_S = 15.0
# Below redis-py's default socket timeout (5 s), which a blocked XREAD would otherwise hit.
READ_BLOCK_MS = 2_000
READ_COUNT = 500
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0
# What the browser waits before it reconnects after the stream ends (a drop, a restart).
RETRY_MS = 3_000
log = structlog.get_logger(component="api.live")


def frame(event: Event) -> bytes | None:
    """The SSE frame of an event a page shows (None for the others): public fields only."""
    if event.type == MONITOR_CHANGED:
        name, data = "status", {"monitor_id": event.monitor_id, "status": event.status,
                                "since_ms": event.at_ms}
    elif event.type in (INCIDENT_OPENED, INCIDENT_RESOLVED):
        name, data = "incident", {
            "monitor_id": event.monitor_id, "incident_id": event.incident_id,
            "state": "opened" if event.type == INCIDENT_OPENED else "resolved",
            "opened_ms": event.opened_ms, "resolved_ms": event.resolved_ms}
    else:
        return None
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


@dataclass(eq=False)
class Subscriber:
    """One open stream: the monitors of its page, and the frames not yet sent to it; None in
    the queue ends the stream."""

    monitors: frozenset[str]
    abort: Callable[[], None]
    queue: asyncio.Queue[bytes | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_MAX + 1))

    def offer(self, data: bytes) -> bool:
        """False: the client is QUEUE_MAX frames behind."""
        if self.queue.qsize() >= QUEUE_MAX:
            return False
        self.queue.put_nowait(data)
        return True

    def end(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class Live:
    """The process's one reader of each shard's events stream and their subscribers."""

    def __init__(self, r: aioredis.Redis, streams: Sequence[str]) -> None:
        self.r = r
        self.streams = list(streams)
        self.subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[Any] | None = None
        self._after: dict[str, bytes | str] = dict.fromkeys(self.streams, "$")
        self._positioned = asyncio.Event()
        self._stop = asyncio.Event()

    async def subscribe(self, monitors: frozenset[str],
                        abort: Callable[[], None]) -> Subscriber | None:
        """A new subscriber, or None when STREAMS_MAX are open. The reader starts with the
        first one, at the stream's newest entry, so whatever is added after this returns is
        delivered."""
        if len(self.subscribers) >= STREAMS_MAX:
            return None
        sub = Subscriber(monitors, abort)
        self.subscribers.add(sub)
        if self._task is None:
            self._task = asyncio.create_task(self._run_all())
        await self._positioned.wait()
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    async def _position(self, stream: str) -> None:
        """Start after the newest entry as it is now (what `$` would mean at this moment)."""
        try:
            newest: Any = await self.r.xrevrange(stream, count=1)
        except (RedisError, OSError):
            return  # `$` then, once Redis answers: the reader's retries say so
        self._after[stream] = newest[0][0] if newest else b"0-0"

    async def close(self, _app: web.Application | None = None) -> None:
        """End every open stream and the reader (the app's shutdown: handlers return at once
        instead of holding the stop for aiohttp's shutdown timeout)."""
        for sub in list(self.subscribers):
            sub.end()
        if self._task is not None:
            # Let the XREAD in flight return (within READ_BLOCK_MS) rather than cancel it: a
            # command cancelled half-way leaves the client's connection to be torn down,
            # which holds up closing the client.
            self._stop.set()
            await self._task
            self._task = None
            self._positioned.clear()
            self._stop.clear()

    async def _run_all(self) -> None:
        """A reader per stream: a cluster serves one XREAD per slot, a shard each."""
        for stream in self.streams:
            await self._position(stream)
        self._positioned.set()
        await asyncio.gather(*(self._run(stream) for stream in self.streams))

    async def _run(self, stream: str) -> None:
        delay = BACKOFF_MIN_S
        failing = False
        while not self._stop.is_set():
            try:
                reply: Any = await self.r.xread({stream: self._after[stream]},
                                                count=READ_COUNT, block=READ_BLOCK_MS)
            except (RedisError, OSError) as exc:
                if not failing:
                    log.warning("events stream unreachable; live pages wait and retry",
                                error=type(exc).__name__)
                    failing = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            if failing:
                log.info("events stream reachable again")
                failing, delay = False, BACKOFF_MIN_S
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    self._after[stream] = entry_id
                    self._fan_out(entry_id, fields)

    def _fan_out(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            event = Event.from_json(fields.get(EVENT_FIELD, b""))
        except BadEvent as exc:
            # Not this reader's to dead-letter (it has no group): the evaluator's readers do.
            log.warning("event skipped", entry_id=entry_id.decode(), reason=str(exc))
            return
        data = frame(event)
        if data is None:
            return
        for sub in list(self.subscribers):
            if event.monitor_id in sub.monitors and not sub.offer(data):
                log.warning("slow live client dropped", queued=QUEUE_MAX)
                self.unsubscribe(sub)
                sub.end()
                sub.abort()


LIVE: web.AppKey[Live] = web.AppKey("live", Live)


async def page_monitors(request: web.Request, page_id: str) -> frozenset[str]:
    row = await status_pages.get(request.app[PG], page_id)
    if row is None:
        raise json_error(web.HTTPNotFound, f"no status page {page_id!r}")
    page = status_pages.page_of(row)
    tags = {r["id"]: list(r["tags"]) for r in await store.list_all(request.app[PG])}
    return frozenset(e.id for g in page.groups for e in g.entries(tags))


async def events(request: web.Request) -> web.StreamResponse:
    monitors = await page_monitors(request, request.match_info["page_id"])
    transport = request.transport
    live = request.app[LIVE]
    sub = await live.subscribe(monitors, transport.close if transport else lambda: None)
    if sub is None:
        raise json_error(web.HTTPServiceUnavailable, "too many live streams open; retry later")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    try:
        await response.prepare(request)
        await response.write(f"retry: {RETRY_MS}\n: connected\n\n".encode())
        while True:
            try:
                data = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
            except TimeoutError:
                data = b": keep-alive\n\n"
            if data is None:
                break
            await response.write(data)
    except ConnectionError:
        pass  # the client went away, or was dropped (ClientConnectionResetError)
    finally:
        live.unsubscribe(sub)
    return response


def add_live_routes(app: web.Application) -> None:
    live = Live(app[REDIS], [keys.events for keys in app[SHARDS].all])
    app[LIVE] = live
    app.on_shutdown.append(live.close)
    app.router.add_get("/status/{page_id}/events", events)
