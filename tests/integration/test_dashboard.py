"""The ClickHouse panels of the Grafana dashboard (docs/grafana/vigil.json, row "ClickHouse
rollups") run on chDB against the rollups of rows the test writes, with Grafana's time macros
filled in, and say what the rows say: a panel whose SQL does not parse, or names a column the
rollups do not have, would otherwise be found only by a user's empty panel."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from engine.clickhouse import ClickHouse
from sinks.clickhouse import COLUMNS, row
from tests.support.helpers import check_result, repo_root

HOUR_MS = 3_600_000


def clickhouse_panels() -> dict[str, str]:
    document = json.loads((repo_root() / "docs" / "grafana" / "vigil.json").read_text())
    return {panel["title"]: target["rawSql"] for panel in document["panels"]
            for target in panel.get("targets", ()) if "rawSql" in target}


async def run(ch: ClickHouse, sql: str) -> list[Any]:
    """The panel's query over the last two days, as Grafana's macros give them."""
    return list(await ch.rows(sql.replace("$__fromTime", "(now() - INTERVAL 2 DAY)")
                              .replace("$__toTime", "now()")))


@pytest.fixture
async def written(ch: ClickHouse) -> None:
    """Two hours ago: one monitor up three times (10, 12, 14 ms), down once; another only
    expired."""
    await ch.command("TRUNCATE TABLE check_results")
    for table in ("results_hourly", "results_daily", "rollups_settled"):
        await ch.command(f"TRUNCATE TABLE {table}")
    at = (int(time.time() * 1000) // HOUR_MS - 2) * HOUR_MS
    results = [check_result("dash-web", at, "up", latency_ms=10.0),
               check_result("dash-web", at + 60_000, "up", latency_ms=12.0),
               check_result("dash-web", at + 120_000, "up", latency_ms=14.0),
               check_result("dash-web", at + 180_000, "down", error_kind="refused"),
               check_result("dash-db", at, "expired")]
    await ch.insert("check_results", [row(r) for r in results], COLUMNS)
    await ch.command("INSERT INTO rollups_settled (rollup, through) "
                     "VALUES ('results', toStartOfHour(now()))")


def test_the_rollups_row_has_its_panels():
    assert set(clickhouse_panels()) == {
        "Uptime by check count, per day", "Not checked and maintenance, per day",
        "Latency p50 / p95 / p99, per day", "Lowest uptime by check count",
        "Rollups settled through"}


async def test_every_clickhouse_panel_runs_and_says_what_was_written(ch, written):
    panels = clickhouse_panels()
    [(_, uptime)] = await run(ch, panels["Uptime by check count, per day"])
    assert uptime == 75
    [(_, errors, expired, maintenance)] = await run(
        ch, panels["Not checked and maintenance, per day"])
    assert (errors, expired, maintenance) == (0, 1, 0)
    [(_, p50, p95, p99)] = await run(ch, panels["Latency p50 / p95 / p99, per day"])
    # 1 % buckets: the second of three answers, then the third.
    assert p50 == pytest.approx(12, rel=0.01)
    assert p95 == pytest.approx(14, rel=0.01)
    assert p99 == pytest.approx(14, rel=0.01)
    assert await run(ch, panels["Lowest uptime by check count"]) == [
        ("dash-web", 75, 1, 0, 0)]
    [(rollup, _, behind)] = await run(ch, panels["Rollups settled through"])
    assert rollup == "results"
    assert 0 <= behind <= 60
