"""An upgrade of check_results from the layout before ClickHouse migration 0003, in a process
of its own (chDB keeps one engine per process, and a test session holds its own open):
`python -m tests.support.clickhouse_upgrade CHDB_URL POSTGRES_DSN` migrates an empty chDB
path to version 2 with the real runner, writes history the old engine gets wrong, migrates
the rest of the way and checks what stays; exits 0 when all holds."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from engine import migrate
from engine.clickhouse import ClickHouse
from engine.events import CheckResult
from sinks.clickhouse import COLUMNS, row
from tests.support.helpers import check_result

T0 = int(time.time()) * 1000 - 3_600_000  # inside the 400-day TTL
READ = "SELECT check_id, toString(outcome) FROM {table} FINAL ORDER BY check_id"
# What a sink of that release wrote: the columns before `maintenance` (ClickHouse 0005).
OLD_COLUMNS = COLUMNS[:COLUMNS.index("maintenance")]


REAL_LOAD = migrate.load


def before_0003(backend: str) -> list[migrate.Migration]:
    """The migrations a release before 0003 shipped."""
    return [m for m in REAL_LOAD(backend) if backend != "clickhouse" or m.version < 3]


def through_0004(backend: str) -> list[migrate.Migration]:
    """The release that brought 0003 and 0004: the state their reruns are tried in (a later
    migration changes check_results, which 0004's attach needs to match the old table)."""
    return [m for m in REAL_LOAD(backend) if backend != "clickhouse" or m.version <= 4]


async def insert(ch: ClickHouse, *batches: list[CheckResult]) -> None:
    """Each batch in an insert of its own: a part of its own that no merge has folded yet."""
    for batch in batches:
        await ch.insert("check_results", [row(result)[:len(OLD_COLUMNS)] for result in batch],
                        OLD_COLUMNS)


async def outcomes(ch: ClickHouse, table: str = "check_results") -> list[tuple[Any, ...]]:
    return await ch.rows(READ.format(table=table))


async def main(url: str, postgres_dsn: str) -> None:
    ch = ClickHouse.from_url(url)
    try:
        migrate.load = before_0003  # the real runner, on the files of the older release
        try:
            await migrate.migrate(postgres_dsn, ch)
        finally:
            migrate.load = REAL_LOAD
        answered = check_result("a", T0, "up")
        rerun = check_result("a", T0, "expired", started_ms=T0 + 30_000, error_kind="expired")
        lone = check_result("b", T0 + 1_000, "down", error_kind="connect")
        twice = check_result("c", T0 + 2_000, "up")
        # `twice` again in a later batch of its own, as a sink that died before XACK writes it.
        await insert(ch, [answered], [rerun], [lone, twice], [twice])
        old = await outcomes(ch)
        assert old == [(answered.check_id, "expired"), (lone.check_id, "down"),
                       (twice.check_id, "up")], f"the old engine kept the last insert: {old}"

        migrate.load = through_0004
        try:
            done = await migrate.migrate(postgres_dsn, ch)
        finally:
            migrate.load = REAL_LOAD
        assert done == {"postgres": [], "clickhouse": [3, 4]}, done
        expected = [(answered.check_id, "up"), (lone.check_id, "down"), (twice.check_id, "up")]
        assert await outcomes(ch) == expected
        ddl = await ch.command("SHOW CREATE TABLE check_results")
        assert "ReplacingMergeTree(precedence)" in ddl, ddl
        assert "TTL toDateTime(scheduled) + toIntervalDay(400)" in ddl, ddl
        # The old table is kept, as it was, for the operator to compare and drop.
        [(kept,)] = await ch.rows("SELECT count() FROM check_results_before_0003")
        assert kept == 5, kept

        # 0004 rerun (a failure after its attach): the copies fold into the rows they repeat.
        [m4] = [m for m in REAL_LOAD("clickhouse") if m.version == 4]
        for statement in migrate.statements(m4.sql):
            await ch.command(statement)
        assert await outcomes(ch) == expected
        # 0003 rerun after it succeeded: refused at the rename, and nothing moved.
        [m3] = [m for m in REAL_LOAD("clickhouse") if m.version == 3]
        refused = ""
        try:
            await ch.command(migrate.statements(m3.sql)[0])
        except Exception as exc:
            refused = str(exc)
        assert "check_results_before_0003 already exists" in refused, refused
        assert await outcomes(ch) == expected
        rest = await migrate.migrate(postgres_dsn, ch)
        assert rest["clickhouse"] == [m.version for m in REAL_LOAD("clickhouse")
                                      if m.version > 4], rest

        # And from now on: a late `expired` never replaces the answer, through a merge too.
        await insert(ch, [check_result("b", T0 + 1_000, "expired", started_ms=T0 + 60_000)])
        await ch.command("OPTIMIZE TABLE check_results FINAL")
        assert await ch.rows("SELECT check_id, toString(outcome) FROM check_results "
                             "ORDER BY check_id") == expected
    finally:
        await ch.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
