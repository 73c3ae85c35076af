"""Maintenance windows in Postgres (migration 0010): the one place with SQL about them.

A window is stored as it was written (`definition`, validated by engine.maintenance.Window
before every write); `version` grows only when the definition or the source changes, so an
unchanged `apply` writes nothing. `source` tells file windows (`vigil monitors apply`, pruned
with `--prune`) from API windows, as for monitors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from pydantic import ValidationError

from engine.maintenance import Window
from engine.store import Conn, transaction

UPSERT = """
INSERT INTO maintenance_windows AS w (id, definition, source) VALUES ($1, $2::jsonb, $3)
ON CONFLICT (id) DO UPDATE SET definition = EXCLUDED.definition, source = EXCLUDED.source,
    version = w.version + 1, updated_at = now()
WHERE (w.definition, w.source) IS DISTINCT FROM (EXCLUDED.definition, EXCLUDED.source)
RETURNING (xmax = 0) AS created
"""
SELECT = """SELECT id, definition::text AS definition, source, version, created_at, updated_at
FROM maintenance_windows"""


def stored(window: Window) -> str:
    """The definition as stored: every field that is set, `duration` in milliseconds, times as
    ISO 8601 with their offsets."""
    return orjson.dumps(window.model_dump(mode="json", exclude_none=True)).decode()


def window_of(row: asyncpg.Record) -> Window:
    return Window.model_validate_json(row["definition"])


def described(row: asyncpg.Record) -> dict[str, Any]:
    """A stored window plus its bookkeeping, for the API and `vigil maintenance show`."""
    out: dict[str, Any] = orjson.loads(row["definition"])
    out.update(source=row["source"], version=row["version"],
               created_at=row["created_at"].isoformat(), updated_at=row["updated_at"].isoformat())
    return out


async def upsert(conn: Conn | asyncpg.Pool, window: Window, source: str) -> bool | None:
    """True if created, False if changed, None if it was already so."""
    created: bool | None = await conn.fetchval(UPSERT, window.id, stored(window), source)
    return created


async def create(pool: asyncpg.Pool, window: Window, source: str) -> bool:
    """False, and nothing written, when a window with that id exists."""
    return await pool.fetchval(
        "INSERT INTO maintenance_windows (id, definition, source) VALUES ($1, $2::jsonb, $3) "
        "ON CONFLICT (id) DO NOTHING RETURNING true", window.id, stored(window),
        source) is not None


async def get(pool: asyncpg.Pool, window_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await pool.fetchrow(f"{SELECT} WHERE id = $1", window_id)
    return row


async def list_all(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(f"{SELECT} ORDER BY id")


async def delete(pool: asyncpg.Pool, window_id: str) -> bool:
    return await pool.fetchval("DELETE FROM maintenance_windows WHERE id = $1 RETURNING true",
                               window_id) is not None


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


@dataclass(slots=True)
class Plan:
    """What `apply` does to the file windows: ids to create, update, delete."""

    create: list[str] = field(default_factory=list)
    update: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    unchanged: int = 0

    def lines(self) -> list[str]:
        return ([f"+ create maintenance {wid}" for wid in self.create]
                + [f"~ update maintenance {wid}" for wid in self.update]
                + [f"- delete maintenance {wid}" for wid in self.delete])

    def summary(self) -> str:
        return (f"maintenance windows: {len(self.create)} created, {len(self.update)} updated, "
                f"{self.unchanged} unchanged, {len(self.delete)} deleted")


async def apply(db: asyncpg.Pool | Conn, windows: list[Window], prune: bool,
                dry_run: bool) -> Plan:
    """Make the file windows match `windows` in one transaction (unless dry_run); with prune,
    file windows not among them are deleted. API windows are only ever replaced by a file
    window of the same id, as for monitors."""
    plan = Plan()
    async with transaction(db) as conn:
        have = {r["id"]: r for r in await conn.fetch(
            f"{SELECT} WHERE id = ANY($1) OR source = 'file'", [w.id for w in windows])}
        for window in windows:
            row = have.get(window.id)
            if row is None:
                plan.create.append(window.id)
            elif (orjson.loads(row["definition"]), row["source"]) != (
                    orjson.loads(stored(window)), "file"):
                plan.update.append(window.id)
            else:
                plan.unchanged += 1
        if prune:
            wanted = {w.id for w in windows}
            plan.delete = sorted(wid for wid, r in have.items()
                                 if r["source"] == "file" and wid not in wanted)
        if not dry_run:
            for window in windows:
                await upsert(conn, window, "file")
            await conn.execute("DELETE FROM maintenance_windows WHERE id = ANY($1)", plan.delete)
    return plan
