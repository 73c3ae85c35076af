"""Versioned SQL migrations for Postgres and ClickHouse.

The runner holds a Postgres advisory lock for the whole run (both databases), so two
`vigil migrate` at once apply each file once; it refuses a database newer than the code.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

from engine.clickhouse import ClickHouse

LOCK_ID = 0x56_49_47_49_4C  # "VIGIL"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
log = structlog.get_logger(component="migrate")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load(backend: str) -> list[Migration]:
    """The migrations shipped with the code, in version order; versions must be unique."""
    folder = resources.files("migrations") / backend
    found: list[Migration] = []
    for item in folder.iterdir():
        match = _NAME.match(item.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), item.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{backend}: duplicate migration versions in {versions}")
    return found


def statements(sql: str) -> list[str]:
    """ClickHouse runs one statement per request; files separate them with `;` at a line end."""
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in re.split(r";\s*$", body, flags=re.M) if s.strip()]


async def _apply_pending(backend: str, applied: set[int],
                         apply: Callable[[Migration], Awaitable[None]]) -> list[int]:
    """Apply the code's migrations the database lacks, in order; refuse a newer database."""
    code = load(backend)
    newest_code = max((m.version for m in code), default=0)
    newer = sorted(v for v in applied if v > newest_code)
    if newer:
        raise MigrationError(f"{backend} schema is at version {max(newer)}, newer than this "
                             f"code ({newest_code}); upgrade Vigil instead of migrating down")
    done = []
    for m in code:
        if m.version not in applied:
            await apply(m)
            log.info("migration applied", backend=backend, version=m.version, name=m.name)
            done.append(m.version)
    return done


async def _postgres(conn: asyncpg.Connection) -> list[int]:
    await conn.execute("""CREATE TABLE IF NOT EXISTS vigil_schema_migrations (
        version integer PRIMARY KEY, name text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now())""")
    rows = await conn.fetch("SELECT version FROM vigil_schema_migrations")

    async def apply(m: Migration) -> None:
        async with conn.transaction():
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO vigil_schema_migrations (version, name) VALUES ($1, $2)",
                m.version, m.name)

    return await _apply_pending("postgres", {r["version"] for r in rows}, apply)


async def _clickhouse(ch: ClickHouse) -> list[int]:
    await ch.command("""CREATE TABLE IF NOT EXISTS vigil_schema_migrations
        (version UInt32, name String, applied_at DateTime DEFAULT now())
        ENGINE = MergeTree ORDER BY version""")
    rows = await ch.rows("SELECT version FROM vigil_schema_migrations")

    async def apply(m: Migration) -> None:
        # ClickHouse has no DDL transactions: files use IF NOT EXISTS so a rerun after a
        # failure part-way is harmless; the version is recorded last.
        for statement in statements(m.sql):
            await ch.command(statement)
        await ch.insert("vigil_schema_migrations", [[m.version, m.name]], ["version", "name"])

    return await _apply_pending("clickhouse", {int(r[0]) for r in rows}, apply)


async def migrate(postgres_dsn: str, ch: ClickHouse) -> dict[str, list[int]]:
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
        try:
            return {"postgres": await _postgres(conn), "clickhouse": await _clickhouse(ch)}
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)
    finally:
        await conn.close()
