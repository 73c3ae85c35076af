"""The migration runner on real Postgres and chDB."""

from __future__ import annotations

import asyncio

import pytest

from engine.migrate import MigrationError, load, migrate


async def test_rerun_applies_nothing_and_concurrent_runs_agree(ch, pool, postgres_dsn):
    results = await asyncio.gather(migrate(postgres_dsn, ch), migrate(postgres_dsn, ch))
    assert results == [{"postgres": [], "clickhouse": []}] * 2
    versions = [r["version"] for r in await pool.fetch(
        "SELECT version FROM vigil_schema_migrations ORDER BY version")]
    assert versions == [m.version for m in load("postgres")]
    ch_versions = [v for (v,) in await ch.rows(
        "SELECT version FROM vigil_schema_migrations ORDER BY version")]
    assert ch_versions == [m.version for m in load("clickhouse")]


async def test_refuses_a_database_newer_than_the_code(ch, pool, postgres_dsn):
    await pool.execute("INSERT INTO vigil_schema_migrations (version, name) VALUES (9999, 'x')")
    try:
        with pytest.raises(MigrationError, match="postgres schema is at version 9999"):
            await migrate(postgres_dsn, ch)
    finally:
        await pool.execute("DELETE FROM vigil_schema_migrations WHERE version = 9999")


async def test_check_results_table_has_retention_and_day_partitions(ch):
    ddl = await ch.command("SHOW CREATE TABLE check_results")
    assert "PARTITION BY toDate(scheduled)" in ddl
    assert "ORDER BY (monitor_id, scheduled, check_id)" in ddl
    assert "toIntervalDay(400)" in ddl
