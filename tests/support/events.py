"""Evaluation events as the evaluator writes them (engine.events.Event, deterministic ids),
published on the events stream, and a projection sink run until its group has taken all."""

from __future__ import annotations

from typing import Any

import asyncpg
import redis.asyncio as aioredis

from engine.clickhouse import ClickHouse
from engine.events import (
    INCIDENT_OPENED,
    INCIDENT_RESOLVED,
    MONITOR_CHANGED,
    STATUS_CHANGED,
    Event,
    Status,
    event_id,
)
from engine.incidents import TABLES
from engine.keys import EVENT_GROUPS, Keys
from engine.streams import EVENT_FIELD, ensure_group
from tests.support.helpers import running, wait_for


def change(monitor_id: str, at_ms: int, status: Status, previous: Status | None = None, *,
           region: str | None = None, cause: str = "eu", **fields: Any) -> Event:
    """A region's status.changed, or the monitor's monitor.changed when `region` is None;
    caused by a result of `region` (of `cause` for the monitor's) at `at_ms`."""
    kind = MONITOR_CHANGED if region is None else STATUS_CHANGED
    return Event(type=kind, id=event_id(kind, monitor_id, region or cause, at_ms),
                 monitor_id=monitor_id, at_ms=at_ms, region=region, status=status,
                 previous=previous, **fields)


def opened(monitor_id: str, opened_ms: int, *, cause: str = "eu", **fields: Any) -> Event:
    return Event(type=INCIDENT_OPENED, id=event_id(INCIDENT_OPENED, monitor_id, cause, opened_ms),
                 monitor_id=monitor_id, at_ms=opened_ms, opened_ms=opened_ms,
                 incident_id=f"{monitor_id}:{opened_ms}", **fields)


def resolved(monitor_id: str, opened_ms: int, resolved_ms: int, *, cause: str = "eu",
             **fields: Any) -> Event:
    return Event(type=INCIDENT_RESOLVED,
                 id=event_id(INCIDENT_RESOLVED, monitor_id, cause, resolved_ms),
                 monitor_id=monitor_id, at_ms=resolved_ms, opened_ms=opened_ms,
                 resolved_ms=resolved_ms, incident_id=f"{monitor_id}:{opened_ms}", **fields)


async def publish(r: aioredis.Redis, keys: Keys, events: list[Event | bytes]) -> None:
    """XADD each event (or raw bytes, for a bad one) to the events stream, after making every
    group of it, so each group sees them all."""
    for group in EVENT_GROUPS:
        await ensure_group(r, keys.events, group)
    for e in events:
        await r.xadd(keys.events, {EVENT_FIELD: e if isinstance(e, bytes) else e.to_json()})


async def group_done(r: aioredis.Redis, stream: str, group: str) -> bool:
    """The group has read everything in the stream and acknowledged it."""
    info = {g["name"].decode(): g for g in await r.xinfo_groups(stream)}
    last = (await r.xinfo_stream(stream))["last-generated-id"]
    return bool(info[group]["pending"] == 0 and info[group]["last-delivered-id"] == last)


async def run_until_done(sink: Any, r: aioredis.Redis, timeout: float = 10) -> None:
    """Run the sink until its group has taken everything published so far."""
    async with running(sink):
        await wait_for(lambda: group_done(r, sink.stream, sink.group), timeout=timeout)


async def clear_projections(pool: asyncpg.Pool, ch: ClickHouse) -> None:
    """Empty the projections' tables (Postgres and ClickHouse status_events)."""
    await pool.execute(f"TRUNCATE {', '.join(TABLES)}")
    await ch.command("TRUNCATE TABLE status_events")


async def projection(pool: asyncpg.Pool) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the projection's tables, in key order."""
    order = {"incidents": "id", "incident_notes": "id", "confirmed_status": "monitor_id, region",
             "confirmed_history": "monitor_id, region, at_ms"}
    return {t: [tuple(r.values()) for r in await pool.fetch(
        f"SELECT * FROM {t} ORDER BY {order[t]}")] for t in TABLES}
