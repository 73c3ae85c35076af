"""Incidents and confirmed status: the one place that holds SQL about them, for the events
stream's projection (sinks.incidents), `vigil replay` and the API.

The projection is idempotent and moves only forward: every row names the event that set it
(a redelivered event changes nothing), `confirmed_status` takes an event only if it is newer
(in `at_ms`, then id) than the one it holds, and an incident's opening and resolve each fill
their own columns once, in whichever order they come.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
import orjson

from engine.durations import parse_duration_ms
from engine.events import (
    INCIDENT_OPENED,
    INCIDENT_RESOLVED,
    MONITOR_CHANGED,
    STATUS_CHANGED,
    BadEvent,
    Event,
)
from engine.store import Conn

# The region a monitor's own status (over its regions, the quorum) is kept under.
MONITOR = "*"
CHANGES = (STATUS_CHANGED, MONITOR_CHANGED)
NOTE_MAX = 10_000
LIST_MAX = 1_000

# Each batch is three statements whatever its size (unnest turns columns back into rows), in
# one transaction; rows come sorted by key, so concurrent sinks lock in one order.
HISTORY = """
INSERT INTO confirmed_history (event_id, monitor_id, region, at_ms, status, previous, check_id,
    maintenance)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                     $7::text[], $8::bool[])
ON CONFLICT (event_id) DO NOTHING
"""
STATUS = """
INSERT INTO confirmed_status AS s (monitor_id, region, status, previous, since_ms, event_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[])
ON CONFLICT (monitor_id, region) DO UPDATE SET
    status = EXCLUDED.status, previous = EXCLUDED.previous, since_ms = EXCLUDED.since_ms,
    event_id = EXCLUDED.event_id
WHERE (s.since_ms, s.event_id) < (EXCLUDED.since_ms, EXCLUDED.event_id)
"""
# What the opening tells (first failing check, regions, folding, maintenance) comes from the
# opening once it is here; a resolve that came first filled them from its own copy meanwhile.
INCIDENTS = """
INSERT INTO incidents AS i (id, monitor_id, opened_ms, resolved_ms, first_check_id, regions,
    folded_into, maintenance, error_kind, error, reason, opened_event, resolved_event)
SELECT id, m, o, r, fc, rg::jsonb, fi, mt, ek, er, rs, oe, re
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[],
            $7::text[], $8::bool[], $9::text[], $10::text[], $11::text[], $12::text[],
            $13::text[])
     AS u(id, m, o, r, fc, rg, fi, mt, ek, er, rs, oe, re)
ON CONFLICT (id) DO UPDATE SET
    first_check_id = CASE WHEN i.opened_event IS NULL THEN EXCLUDED.first_check_id
                          ELSE i.first_check_id END,
    regions = CASE WHEN i.opened_event IS NULL THEN EXCLUDED.regions ELSE i.regions END,
    folded_into = CASE WHEN i.opened_event IS NULL THEN EXCLUDED.folded_into
                       ELSE i.folded_into END,
    maintenance = CASE WHEN i.opened_event IS NULL THEN EXCLUDED.maintenance
                       ELSE i.maintenance END,
    error_kind = CASE WHEN i.opened_event IS NULL THEN EXCLUDED.error_kind
                      ELSE i.error_kind END,
    error = CASE WHEN i.opened_event IS NULL THEN EXCLUDED.error ELSE i.error END,
    reason = COALESCE(i.reason, EXCLUDED.reason),
    opened_event = COALESCE(i.opened_event, EXCLUDED.opened_event),
    resolved_ms = COALESCE(i.resolved_ms, EXCLUDED.resolved_ms),
    resolved_event = COALESCE(i.resolved_event, EXCLUDED.resolved_event)
WHERE (i.opened_event IS NULL AND EXCLUDED.opened_event IS NOT NULL)
   OR (i.resolved_event IS NULL AND EXCLUDED.resolved_event IS NOT NULL)
"""
# The tables the projection is made of, in the order `vigil replay` empties them (notes and
# acknowledgements go with their incidents: they are not in the events).
TABLES = ("incident_notes", "incidents", "confirmed_history", "confirmed_status")


def checked(event: Event) -> Event:
    """The event, if it holds what its projection needs; BadEvent (dead-lettered) if not."""
    if event.type in CHANGES and event.status is None:
        raise BadEvent(f"{event.type} {event.id!r}: field 'status' is missing")
    if event.type == STATUS_CHANGED and not event.region:
        raise BadEvent(f"{event.type} {event.id!r}: field 'region' is missing")
    if event.type in (INCIDENT_OPENED, INCIDENT_RESOLVED):
        for name in ("incident_id", "opened_ms"):
            if getattr(event, name) is None:
                raise BadEvent(f"{event.type} {event.id!r}: field {name!r} is missing")
    if event.type == INCIDENT_RESOLVED and event.resolved_ms is None:
        raise BadEvent(f"{event.type} {event.id!r}: field 'resolved_ms' is missing")
    return event


def region_of(event: Event) -> str:
    return (event.region or MONITOR) if event.type == STATUS_CHANGED else MONITOR


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


def history_rows(events: list[Event]) -> list[tuple[Any, ...]]:
    return sorted({e.id: (e.id, e.monitor_id, region_of(e), e.at_ms, e.status, e.previous,
                          e.check_id, e.maintenance)
                   for e in events if e.type in CHANGES}.values())


def status_rows(events: list[Event]) -> list[tuple[Any, ...]]:
    """The newest change per monitor and region (the statement takes one row per key)."""
    newest: dict[tuple[str, str], Event] = {}
    for e in events:
        if e.type not in CHANGES:
            continue
        key = (e.monitor_id, region_of(e))
        seen = newest.get(key)
        if seen is None or (e.at_ms, e.id) > (seen.at_ms, seen.id):
            newest[key] = e
    return [(*key, e.status, e.previous, e.at_ms, e.id) for key, e in sorted(newest.items())]


@dataclass(slots=True)
class _Incident:
    id: str
    monitor_id: str
    opened_ms: int
    resolved_ms: int | None = None
    first_check_id: str | None = None
    regions: bytes = b"{}"
    folded_into: str | None = None
    maintenance: bool = False
    error_kind: str | None = None
    error: str | None = None
    reason: str | None = None
    opened_event: str | None = None
    resolved_event: str | None = None

    def take(self, e: Event) -> None:
        """The opening's columns from the opening (or from a resolve until it comes)."""
        if e.type == INCIDENT_RESOLVED and self.resolved_event is None:
            self.resolved_ms, self.resolved_event, self.reason = e.resolved_ms, e.id, e.reason
        if self.opened_event is None:
            self.first_check_id, self.folded_into = e.first_check_id, e.folded_into
            self.regions, self.maintenance = orjson.dumps(e.regions), e.maintenance
            self.error_kind, self.error = e.error_kind, e.error
            if e.type == INCIDENT_OPENED:
                self.opened_event = e.id


def incident_rows(events: list[Event]) -> list[tuple[Any, ...]]:
    """One row per incident of the batch, its opening and resolve merged (the statement
    cannot touch a row twice)."""
    merged: dict[str, _Incident] = {}
    for e in sorted((e for e in events if e.type in (INCIDENT_OPENED, INCIDENT_RESOLVED)),
                    key=lambda e: e.type != INCIDENT_OPENED):
        assert e.incident_id is not None  # checked()
        assert e.opened_ms is not None
        incident = merged.setdefault(e.incident_id,
                                     _Incident(e.incident_id, e.monitor_id, e.opened_ms))
        incident.take(e)
    return [(i.id, i.monitor_id, i.opened_ms, i.resolved_ms, i.first_check_id,
             i.regions.decode(), i.folded_into, i.maintenance, i.error_kind, i.error, i.reason,
             i.opened_event, i.resolved_event) for _, i in sorted(merged.items())]


async def project(conn: Conn, events: list[Event]) -> None:
    """Write a batch of events into the projection, in one transaction."""
    statements = ((HISTORY, history_rows(events)), (STATUS, status_rows(events)),
                  (INCIDENTS, incident_rows(events)))
    async with conn.transaction():
        for sql, rows in statements:
            if rows:
                await conn.execute(sql, *_columns(rows))


async def empty(conn: Conn) -> bool:
    """Whether the projection holds nothing (what `vigil replay` rebuilds into)."""
    for table in TABLES:
        if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
            return False
    return True


async def truncate(conn: Conn) -> None:
    await conn.execute(f"TRUNCATE {', '.join(TABLES)}")


# --- reads, for the API and the CLI ---

INCIDENT_COLUMNS = """i.id, i.monitor_id, i.opened_ms, i.resolved_ms, i.duration_ms,
    i.first_check_id, i.regions::text AS regions, i.folded_into, i.maintenance, i.error_kind,
    i.error, i.reason, i.acknowledged_by, i.acknowledged_at"""
State = Literal["open", "resolved"]


def since_ms(text: str) -> int:
    """`24h` (a duration back from now) or an ISO 8601 time (UTC unless it says otherwise),
    as epoch ms; a ValueError says what is accepted."""
    try:
        return int(time.time() * 1000) - parse_duration_ms(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("expected a duration like 24h or an ISO 8601 time, like "
                         "2026-01-31T12:00:00Z") from None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


def described(row: asyncpg.Record) -> dict[str, Any]:
    out = dict(row)
    out["regions"] = orjson.loads(row["regions"])
    out["acknowledged_at"] = row["acknowledged_at"] and row["acknowledged_at"].isoformat()
    return out


async def listed(pool: asyncpg.Pool, *, state: str | None = None,
                 monitor_id: str | None = None, since_ms: int | None = None,
                 limit: int = 100) -> list[dict[str, Any]]:
    """Incidents, newest opening first; `state` one of State (the caller checks), `since_ms`:
    opened then or later."""
    rows = await pool.fetch(
        f"""SELECT {INCIDENT_COLUMNS} FROM incidents i
            WHERE ($1::text IS NULL OR ($1 = 'open') = (i.resolved_ms IS NULL))
              AND ($2::text IS NULL OR i.monitor_id = $2)
              AND ($3::bigint IS NULL OR i.opened_ms >= $3)
            ORDER BY i.opened_ms DESC, i.id LIMIT $4""",
        state, monitor_id, since_ms, min(limit, LIST_MAX))
    return [described(r) for r in rows]


async def one(pool: asyncpg.Pool, incident_id: str) -> dict[str, Any] | None:
    """An incident with its notes, oldest first; None if there is none."""
    row = await pool.fetchrow(
        f"SELECT {INCIDENT_COLUMNS} FROM incidents i WHERE i.id = $1",
        incident_id)
    if row is None:
        return None
    notes = await pool.fetch("SELECT author, text, created_at FROM incident_notes "
                             "WHERE incident_id = $1 ORDER BY id", incident_id)
    return {**described(row), "notes": [
        {"author": n["author"], "text": n["text"], "created_at": n["created_at"].isoformat()}
        for n in notes]}


async def acknowledge(pool: asyncpg.Pool, incident_id: str, by: str) -> bool:
    """Record who acknowledged it and when; the first acknowledgement stays. False: no such
    incident."""
    found = await pool.fetchval(
        """UPDATE incidents SET acknowledged_by = COALESCE(acknowledged_by, $2),
                                acknowledged_at = COALESCE(acknowledged_at, now())
           WHERE id = $1 RETURNING true""", incident_id, by)
    return found is not None


async def add_note(pool: asyncpg.Pool, incident_id: str, author: str, text: str) -> bool:
    """False: no such incident."""
    added = await pool.fetchval(
        """INSERT INTO incident_notes (incident_id, author, text)
           SELECT id, $2, $3 FROM incidents WHERE id = $1 RETURNING true""",
        incident_id, author, text)
    return added is not None


async def confirmed(pool: asyncpg.Pool, monitor_id: str | None) -> list[dict[str, Any]]:
    """The confirmed status of a monitor (None: of every monitor), per monitor its own
    (region '*') first, then each region's."""
    rows = await pool.fetch(
        """SELECT monitor_id, region, status, previous, since_ms, event_id FROM confirmed_status
           WHERE $1::text IS NULL OR monitor_id = $1
           ORDER BY monitor_id, region <> '*', region""", monitor_id)
    return [dict(r) for r in rows]


# Downtime intervals of one monitor from ClickHouse status_events (migration 0006): each
# monitor.changed to the next; `until` NULL while it lasts. SLA figures sum the `down` ones
# that overlap their window, maintenance ones apart.
DOWNTIME_SQL = """
SELECT status, start, nullIf(until, toDateTime64(0, 3, 'UTC')) AS until, maintenance
FROM (SELECT status, at AS start, maintenance,
             leadInFrame(at, 1, toDateTime64(0, 3, 'UTC')) OVER (
                 ORDER BY at, event_id ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING) AS until
      FROM status_events FINAL
      WHERE monitor_id = {monitor_id:String} AND region = '*')
WHERE status = 'down'
ORDER BY start
"""
