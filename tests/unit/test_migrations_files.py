"""The SQL files shipped with the code: names, versions, and ClickHouse statement splitting."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

import migrations
from engine.migrate import load, statements

BACKENDS = ["postgres", "clickhouse"]
NAME = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")
FOLDER = Path(migrations.__file__).parent
# The ClickHouse statements a rerun after a failure part-way leaves as they were: a create or
# an added column that already exists, a rename of a table already renamed, and attaching a
# table's parts into a ReplacingMergeTree, where the copies fold into the rows they repeat
# (tests/integration/test_clickhouse_upgrade.py reruns it).
RERUN_SAFE = re.compile(r"""
    CREATE\ TABLE\ IF\ NOT\ EXISTS\ \w+
  | CREATE\ MATERIALIZED\ VIEW\ IF\ NOT\ EXISTS\ \w+\ TO\ \w+\ AS\s
  | ALTER\ TABLE\ \w+\ ADD\ COLUMN\ IF\ NOT\ EXISTS\ \w+
  | RENAME\ TABLE\ IF\ EXISTS\ \w+\ TO\ \w+$
  | ALTER\ TABLE\ \w+\ ATTACH\ PARTITION\ ALL\ FROM\ \w+$
""", re.X)


@pytest.mark.parametrize("backend", BACKENDS)
def test_versions_are_unique_and_increasing(backend: str) -> None:
    found = load(backend)
    assert found, f"no {backend} migrations"
    versions = [m.version for m in found]
    assert versions[0] >= 1
    assert all(a < b for a, b in itertools.pairwise(versions))


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_sql_file_is_named_nnnn_name_and_loaded(backend: str) -> None:
    """load() skips a file whose name does not match, so a misnamed file would never run."""
    files = sorted(p.name for p in (FOLDER / backend).iterdir() if p.suffix == ".sql")
    assert all(NAME.match(name) for name in files), files
    assert [f"{m.version:04d}_{m.name}.sql" for m in load(backend)] == files


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_migration_has_sql(backend: str) -> None:
    for m in load(backend):
        assert statements(m.sql), m.name


def test_clickhouse_file_splits_into_statements_without_comments() -> None:
    for m in load("clickhouse"):
        parts = statements(m.sql)
        for part in parts:
            assert not any(line.lstrip().startswith("--") for line in part.splitlines())
            assert not part.rstrip().endswith(";")
            assert part == part.strip()
        # ClickHouse has no DDL transactions: every statement must be safe to rerun.
        for part in parts:
            assert RERUN_SAFE.match(part), f"{m.name}: not safe to rerun: {part[:80]}"


def test_statements_splits_at_semicolons_at_line_ends() -> None:
    sql = (
        "-- header comment\n"
        "CREATE TABLE a (x UInt8) ENGINE = Memory;\n"
        "  -- an indented comment; with a semicolon;\n"
        "ALTER TABLE a ADD COLUMN y String DEFAULT 'a;b';  \t\n"  # blanks after the `;`
        "\n"
        "INSERT INTO a VALUES (1, 'z')\n"
    )
    assert statements(sql) == [
        "CREATE TABLE a (x UInt8) ENGINE = Memory",
        "ALTER TABLE a ADD COLUMN y String DEFAULT 'a;b'",
        "INSERT INTO a VALUES (1, 'z')",
    ]


@pytest.mark.parametrize("sql", ["", "-- only a comment\n", ";\n;\n", "\n\n"])
def test_statements_of_nothing(sql: str) -> None:
    assert statements(sql) == []
