"""Maintenance windows in Postgres (migration 0010): the one place with SQL about them.

A window is stored as it was written (`definition`, validated by engine.maintenance.Window
before every write), in a table of the shape engine.definitions keeps.
"""

from __future__ import annotations

import asyncpg
import orjson
from pydantic import ValidationError

from engine import definitions
from engine.definitions import Plan, Table
from engine.maintenance import Window
from engine.store import Conn

TABLE = Table("maintenance_windows", "maintenance", "maintenance windows")
SELECT = TABLE.select
described = definitions.described
get = TABLE.get
list_all = TABLE.list_all
delete = TABLE.delete


def stored(window: Window) -> str:
    """The definition as stored: every field that is set, `duration` in milliseconds, times as
    ISO 8601 with their offsets."""
    return orjson.dumps(window.model_dump(mode="json", exclude_none=True)).decode()


def window_of(row: asyncpg.Record) -> Window:
    return Window.model_validate_json(row["definition"])


async def upsert(conn: Conn | asyncpg.Pool, window: Window, source: str) -> bool | None:
    """True if created, False if changed, None if it was already so."""
    return await TABLE.upsert(conn, window.id, stored(window), source)


async def create(pool: asyncpg.Pool, window: Window, source: str) -> bool:
    """False, and nothing written, when a window with that id exists."""
    return await TABLE.create(pool, window.id, stored(window), source)


async def versions(pool: asyncpg.Pool) -> dict[str, int]:
    """Window id -> version: what a cache of parsed windows compares itself with."""
    return {r["id"]: r["version"] for r in await pool.fetch(
        "SELECT id, version FROM maintenance_windows")}


async def rows(pool: asyncpg.Pool, ids: list[str]) -> list[asyncpg.Record]:
    return await pool.fetch(f"{SELECT} WHERE id = ANY($1)", ids)


async def monitor_tags(pool: asyncpg.Pool) -> dict[str, list[str]]:
    """Enabled monitor id -> its tags: what windows match."""
    return {r["id"]: r["tags"] for r in await pool.fetch(
        "SELECT id, tags FROM monitors WHERE enabled")}


async def covering(pool: asyncpg.Pool, monitor_id: str) -> list[Window]:
    """The windows that cover one monitor (by its id or its tags); a stored one that no
    longer validates (written under other rules) covers nothing, as for the scheduler."""
    tags = await pool.fetchval("SELECT tags FROM monitors WHERE id = $1", monitor_id) or []
    found = []
    for row in await list_all(pool):
        try:
            window = window_of(row)
        except ValidationError:
            continue
        if window.covers(monitor_id, tags):
            found.append(window)
    return found


async def apply(db: asyncpg.Pool | Conn, windows: list[Window], prune: bool,
                dry_run: bool) -> Plan:
    """Make the file windows match `windows` (engine.definitions.Table.apply)."""
    return await TABLE.apply(db, {w.id: stored(w) for w in windows}, prune, dry_run)
