"""The shape of the ClickHouse DDL for a cluster (engine.migrate.ClusterDDL). No ClickHouse
cluster runs here: this checks what the statements say; tests/integration/test_migrations.py
parses them with ClickHouse's own parser."""

from __future__ import annotations

import re

import pytest

from engine.migrate import (
    BOOKKEEPING,
    ClusterDDL,
    Migration,
    MigrationError,
    clickhouse_script,
    load,
    plan,
    statements,
)

CLUSTER, DATABASE = "vigil-ch", "monitoring"
ON = f" ON CLUSTER '{CLUSTER}'"
PATH = "'/clickhouse/tables/{shard}/{database}/{table}"
# Every table Vigil inserts into or queries, its single-server engine and how its rows are
# spread over the shards: the monitor's hash wherever there is a monitor.
TABLES = {
    "vigil_schema_migrations": ("MergeTree", "rand()"),
    "check_results": ("ReplacingMergeTree", "cityHash64(monitor_id)"),
    "status_events": ("ReplacingMergeTree", "cityHash64(monitor_id)"),
    "results_hourly": ("AggregatingMergeTree", "cityHash64(monitor_id)"),
    "results_daily": ("AggregatingMergeTree", "cityHash64(monitor_id)"),
    "results_monthly": ("AggregatingMergeTree", "cityHash64(monitor_id)"),
    "status_hourly": ("AggregatingMergeTree", "cityHash64(monitor_id)"),
    "rollups_settled": ("MergeTree", "rand()"),
}
VIEWS = {"results_hourly_mv": ("check_results", "results_hourly"),
         "results_daily_mv": ("results_hourly", "results_daily"),
         "results_monthly_mv": ("results_daily", "results_monthly"),
         "status_hourly_mv": ("status_events", "status_hourly")}


def cluster_statements() -> list[str]:
    bookkeeping, code = plan(CLUSTER, DATABASE)
    return bookkeeping + [s for m in code for s in statements(m.sql)]


def creates(kind: str = "TABLE") -> dict[str, list[str]]:
    """The CREATE statements of `kind` by the name they make, in order (a name made twice,
    as 0003 rebuilds check_results, has two)."""
    found: dict[str, list[str]] = {}
    for s in cluster_statements():
        if made := re.match(rf"CREATE {kind} IF NOT EXISTS (\w+) ", s):
            found.setdefault(made[1], []).append(s)
    return found


def test_every_statement_runs_on_the_whole_cluster() -> None:
    for s in cluster_statements():
        assert ON in s, s[:80]


def test_the_single_server_path_is_the_files_unchanged() -> None:
    bookkeeping, code = plan()
    assert bookkeeping == [BOOKKEEPING]
    assert code == load("clickhouse")


def test_each_table_is_a_replicated_local_table_with_a_distributed_one_in_front() -> None:
    tables = creates()
    for name, (engine, key) in TABLES.items():
        local = tables[name + "_local"][-1]
        assert re.search(rf"ENGINE = Replicated{engine}\({PATH}(_\d{{4}})?', '{{replica}}'",
                         local), local
        assert tables[name][-1] == (
            f"CREATE TABLE IF NOT EXISTS {name}{ON} AS {name}_local\n"
            f"ENGINE = Distributed('{CLUSTER}', '{DATABASE}', '{name}_local', {key})")
    # Nothing else is made: every table the code reads or writes keeps its name.
    assert {n.removesuffix("_local") for n in tables} == set(TABLES)


def test_engine_arguments_and_table_clauses_are_kept() -> None:
    tables = creates()
    first, rebuilt = tables["check_results_local"]
    assert "', '{replica}', inserted)\nPARTITION BY toDate(scheduled)" in first
    assert "', '{replica}', precedence)\nPARTITION BY toDate(scheduled)" in rebuilt
    for s in (first, rebuilt):
        assert "ORDER BY (monitor_id, scheduled, check_id)" in s
        assert "TTL toDateTime(scheduled) + INTERVAL 400 DAY DELETE" in s
        # A replicated table deduplicates a repeated block by the replicated setting.
        assert s.endswith("SETTINGS replicated_deduplication_window = 1000")
    assert "ORDER BY (monitor_id, hour, region)" in tables["results_hourly_local"][0]


def test_no_two_replicated_tables_share_a_keeper_path() -> None:
    """{table} is filled in when a table is created and kept through a rename: 0003's rebuilt
    check_results would otherwise find the renamed table's replicas at its path."""
    paths = []
    for name, made in creates().items():
        for s in made:
            if path := re.search(r"Replicated\w*MergeTree\('([^']+)'", s):
                paths.append(path[1].replace("{table}", name))
    assert len(paths) == len(set(paths)) == len(TABLES) + 1


def test_views_sit_on_local_tables_and_write_local_tables() -> None:
    views = creates("MATERIALIZED VIEW")
    assert set(views) == set(VIEWS)
    for name, (source, target) in VIEWS.items():
        (view,) = views[name]
        assert view.startswith(f"CREATE MATERIALIZED VIEW IF NOT EXISTS {name}{ON} "
                               f"TO {target}_local AS\nSELECT ")
        # The alias keeps the SELECT's qualified columns (check_results.maintenance).
        assert re.findall(r"\bFROM (\w+(?: AS \w+)?)", view) == [f"{source}_local AS {source}"]


def test_column_changes_reach_the_local_table_then_the_distributed_one() -> None:
    _, code = plan(CLUSTER, DATABASE)
    by_version = {m.version: statements(m.sql) for m in code}
    for version, column in ((2, "phases"), (5, "maintenance")):
        local, front = by_version[version]
        assert local.startswith(f"ALTER TABLE check_results_local{ON} ADD COLUMN IF NOT EXISTS "
                                f"{column} ")
        assert front == local.replace("check_results_local", "check_results", 1)


def test_the_0003_rebuild_renames_the_local_table_and_rebuilds_the_pair() -> None:
    _, code = plan(CLUSTER, DATABASE)
    rename, drop, alter, local, front = statements(code[2].sql)
    assert rename == f"RENAME TABLE IF EXISTS check_results_local TO " \
                     f"check_results_before_0003_local{ON}"
    # The Distributed table names check_results_local: it would read the new table.
    assert drop == f"DROP TABLE IF EXISTS check_results{ON}"
    assert alter.startswith(f"ALTER TABLE check_results_before_0003_local{ON} ADD COLUMN IF "
                            "NOT EXISTS precedence UInt64\n    MATERIALIZED ")
    assert local.startswith(f"CREATE TABLE IF NOT EXISTS check_results_local{ON} "
                            "AS check_results_before_0003_local\n")
    assert f"{PATH}_0003', " in local
    assert front.startswith(f"CREATE TABLE IF NOT EXISTS check_results{ON} AS "
                            "check_results_local\nENGINE = Distributed(")
    (attach,) = statements(code[3].sql)
    assert attach == (f"ALTER TABLE check_results_local{ON} ATTACH PARTITION ALL FROM "
                      "check_results_before_0003_local")


def test_every_cluster_statement_is_safe_to_rerun() -> None:
    """As on one server (tests/unit/test_migrations_files.py): ClickHouse has no DDL
    transactions, and ON CLUSTER runs a statement on each node on its own."""
    safe = re.compile(r"(CREATE (TABLE|MATERIALIZED VIEW) IF NOT EXISTS|DROP TABLE IF EXISTS"
                      r"|RENAME TABLE IF EXISTS|ALTER TABLE \w+ ON CLUSTER '[\w-]+' "
                      r"(ADD COLUMN IF NOT EXISTS|ATTACH PARTITION ALL FROM)) ")
    for s in cluster_statements():
        assert safe.match(s), s[:80]


@pytest.mark.parametrize("statement", [
    "CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = Memory",
    "CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = ReplicatedMergeTree ORDER BY a",
    "INSERT INTO t VALUES (1)",
    "ALTER TABLE nowhere ADD COLUMN IF NOT EXISTS b UInt8",
    "CREATE MATERIALIZED VIEW IF NOT EXISTS v TO nowhere AS SELECT 1",
])
def test_a_statement_without_a_cluster_form_is_refused(statement: str) -> None:
    """A later migration the rewrite does not know fails loudly instead of running on one
    node of the cluster."""
    with pytest.raises(MigrationError):
        ClusterDDL(CLUSTER, DATABASE).rewrite(statement)


@pytest.mark.parametrize(("cluster", "database"), [("a'b", "db"), ("c", "d b"), ("", "db")])
def test_names_that_cannot_be_quoted_are_refused(cluster: str, database: str) -> None:
    with pytest.raises(MigrationError):
        ClusterDDL(cluster, database)


def test_a_migration_is_rewritten_in_place() -> None:
    ddl = ClusterDDL(CLUSTER, DATABASE)
    ddl.rewrite("CREATE TABLE IF NOT EXISTS t (monitor_id String) ENGINE = MergeTree ORDER BY "
                "monitor_id")
    m = ddl.migration(Migration(9, "more", "-- why\nALTER TABLE t ADD COLUMN IF NOT EXISTS "
                                           "b UInt8;\n"))
    assert (m.version, m.name) == (9, "more")
    assert statements(m.sql) == [f"ALTER TABLE t_local{ON} ADD COLUMN IF NOT EXISTS b UInt8",
                                 f"ALTER TABLE t{ON} ADD COLUMN IF NOT EXISTS b UInt8"]


@pytest.mark.parametrize("cluster", ["", CLUSTER])
def test_the_script_holds_every_statement_in_order(cluster: str) -> None:
    script = clickhouse_script(cluster, DATABASE)
    bookkeeping, code = plan(cluster, DATABASE)
    assert statements(script) == bookkeeping + [s for m in code for s in statements(m.sql)]
    for m in code:
        assert f"\n-- {m.version:04d}_{m.name}\n" in script
