"""The migration runner on real Postgres and chDB."""

from __future__ import annotations

import asyncio

import pytest

from engine.migrate import MigrationError, load, migrate, plan, script_for, statements


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


async def test_every_cluster_statement_parses(ch):
    """ClickHouse's own parser (chDB runs no cluster, so nothing is executed): the shape is
    tested in tests/unit/test_clickhouse_cluster_ddl.py."""
    bookkeeping, code = plan("vigil-ch", "monitoring")
    for statement in bookkeeping + [s for m in code for s in statements(m.sql)]:
        (formatted,), = await ch.rows("SELECT formatQuery({sql:String})", {"sql": statement})
        assert "ON CLUSTER `vigil-ch`" in formatted


async def test_cluster_views_read_their_source_under_its_own_name(ch):
    """A view's SELECT reads NAME_local AS NAME, so its qualified columns
    (check_results.maintenance) still resolve: run each on empty copies of the tables."""
    _, code = plan("vigil-ch", "monitoring")
    views = [s for m in code for s in statements(m.sql) if s.startswith("CREATE MATERIALIZED")]
    assert len(views) == 4
    sources = ["check_results", "results_hourly", "results_daily", "status_events"]
    try:
        for table in sources:
            await ch.command(f"CREATE TABLE {table}_local AS {table}")
        for view in views:
            assert await ch.rows(view.split(" AS\n", 1)[1]) == []
    finally:
        for table in sources:
            await ch.command(f"DROP TABLE IF EXISTS {table}_local")


async def test_a_cluster_migration_needs_foreground_distributed_inserts(ch, postgres_dsn):
    """chDB's default, as a server's, queues a Distributed insert on the node it reached."""
    with pytest.raises(MigrationError, match="distributed_foreground_insert = 1"):
        await migrate(postgres_dsn, ch, cluster="vigil-ch")
    assert await ch.rows("EXISTS TABLE vigil_schema_migrations_local") == [(0,)]


async def test_the_printed_script_points_the_distributed_tables_at_vigils_database(ch):
    """What `vigil migrate --print-sql` prints: on one server the files as they run."""
    (database,), = await ch.rows("SELECT currentDatabase()")
    script = await script_for(ch, "vigil-ch")
    assert f"ENGINE = Distributed('vigil-ch', '{database}', 'check_results_local', " in script
    single = await script_for(ch, "")
    assert statements(single)[1:] == [s for m in load("clickhouse") for s in statements(m.sql)]
