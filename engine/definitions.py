"""Definitions stored as they were written, each kind in a table of its own of one shape:
maintenance windows (migration 0010, engine.maintenance_store) and status pages (0012,
engine.status_pages). `definition` is the JSON the kind's model validated before every write;
`version` grows only when the definition or the source changes, so an unchanged `apply`
writes nothing; `source` tells file definitions (`vigil monitors apply`, pruned with
`--prune`) from API ones, as for monitors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from engine.store import Conn, transaction


def described(row: asyncpg.Record) -> dict[str, Any]:
    """A stored definition plus its bookkeeping, for the API and the CLI."""
    out: dict[str, Any] = orjson.loads(row["definition"])
    out.update(source=row["source"], version=row["version"],
               created_at=row["created_at"].isoformat(), updated_at=row["updated_at"].isoformat())
    return out


@dataclass(slots=True)
class Plan:
    """What `apply` does to the file definitions of a kind: ids to create, update, delete."""

    noun: str  # one, in a line: "maintenance", "status page"
    plural: str  # in the summary: "maintenance windows", "status pages"
    create: list[str] = field(default_factory=list)
    update: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    unchanged: int = 0

    def lines(self) -> list[str]:
        return ([f"+ create {self.noun} {i}" for i in self.create]
                + [f"~ update {self.noun} {i}" for i in self.update]
                + [f"- delete {self.noun} {i}" for i in self.delete])

    def summary(self) -> str:
        return (f"{self.plural}: {len(self.create)} created, {len(self.update)} updated, "
                f"{self.unchanged} unchanged, {len(self.delete)} deleted")


class Table:
    """The SQL of one kind's table; definitions come in as the JSON text to store."""

    def __init__(self, table: str, noun: str, plural: str) -> None:
        self.table = table
        self.noun = noun
        self.plural = plural
        self.upsert_sql = f"""
INSERT INTO {table} AS d (id, definition, source) VALUES ($1, $2::jsonb, $3)
ON CONFLICT (id) DO UPDATE SET definition = EXCLUDED.definition, source = EXCLUDED.source,
    version = d.version + 1, updated_at = now()
WHERE (d.definition, d.source) IS DISTINCT FROM (EXCLUDED.definition, EXCLUDED.source)
RETURNING (xmax = 0) AS created
"""
        self.select = f"""SELECT id, definition::text AS definition, source, version, created_at,
       updated_at
FROM {table}"""

    async def upsert(self, conn: Conn | asyncpg.Pool, item_id: str, definition: str,
                     source: str) -> bool | None:
        """True if created, False if changed, None if it was already so."""
        created: bool | None = await conn.fetchval(self.upsert_sql, item_id, definition, source)
        return created

    async def create(self, pool: asyncpg.Pool, item_id: str, definition: str,
                     source: str) -> bool:
        """False, and nothing written, when one with that id exists."""
        return await pool.fetchval(
            f"INSERT INTO {self.table} (id, definition, source) VALUES ($1, $2::jsonb, $3) "
            "ON CONFLICT (id) DO NOTHING RETURNING true", item_id, definition,
            source) is not None

    async def get(self, pool: asyncpg.Pool, item_id: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await pool.fetchrow(f"{self.select} WHERE id = $1",
                                                         item_id)
        return row

    async def list_all(self, pool: asyncpg.Pool) -> list[asyncpg.Record]:
        return await pool.fetch(f"{self.select} ORDER BY id")

    async def delete(self, pool: asyncpg.Pool, item_id: str) -> bool:
        return await pool.fetchval(f"DELETE FROM {self.table} WHERE id = $1 RETURNING true",
                                   item_id) is not None

    async def apply(self, db: asyncpg.Pool | Conn, wanted: dict[str, str], prune: bool,
                    dry_run: bool,
                    check: Callable[[Conn], Awaitable[None]] | None = None) -> Plan:
        """Make the file definitions match `wanted` (id -> definition) in one transaction
        (unless dry_run); with prune, file ones not among them are deleted. `check` runs in
        the transaction first and may refuse it all by raising. API definitions are only ever
        replaced by a file one of the same id, as for monitors."""
        plan = Plan(self.noun, self.plural)
        async with transaction(db) as conn:
            if check is not None:
                await check(conn)
            have = {r["id"]: r for r in await conn.fetch(
                f"{self.select} WHERE id = ANY($1) OR source = 'file'", list(wanted))}
            for item_id, definition in wanted.items():
                row = have.get(item_id)
                if row is None:
                    plan.create.append(item_id)
                elif (orjson.loads(row["definition"]), row["source"]) != (
                        orjson.loads(definition), "file"):
                    plan.update.append(item_id)
                else:
                    plan.unchanged += 1
            if prune:
                plan.delete = sorted(i for i, r in have.items()
                                     if r["source"] == "file" and i not in wanted)
            if not dry_run:
                for item_id, definition in wanted.items():
                    await self.upsert(conn, item_id, definition, "file")
                await conn.execute(f"DELETE FROM {self.table} WHERE id = ANY($1)", plan.delete)
        return plan
