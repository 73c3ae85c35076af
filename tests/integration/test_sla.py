"""GET /api/v1/monitors/{id}/sla on real Postgres and chDB: uptime by time and by check count,
downtime, what could not be checked, maintenance left out, incidents and MTTR, latency, per
day, week and month; the same answer before and after the rollups settle; bad input named by
its parameter."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from engine import rollups
from engine.clickhouse import ClickHouse
from engine.events import Outcome
from engine.settings import Settings
from sinks.status_events import COLUMNS as STATUS_COLUMNS
from sinks.status_events import row as status_row
from tests.integration.test_rollups import TABLES, write
from tests.support.events import change
from tests.support.helpers import check_result
from tests.support.servers import create_monitors
from vigil import report
from vigil.cli import parser

T0 = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp() * 1000)  # a Monday
MINUTE, HOUR = 60_000, 3_600_000
WEB = {"id": "web", "kind": "http", "interval": "10m", "tags": ["shop"],
       "http": {"url": "http://127.0.0.1:9/"}}
DB = {"id": "db", "kind": "tcp", "interval": "1m", "tcp": {"host": "127.0.0.1", "port": 9}}


def outcome_at(t: int) -> Outcome:
    if T0 + 10 * HOUR <= t < T0 + 10 * HOUR + 30 * MINUTE:
        return "down"
    return "expired" if (t - T0) // (10 * MINUTE) % 50 == 7 else "up"


@pytest.fixture
async def history(api: TestClient, pool: asyncpg.Pool, ch: ClickHouse) -> None:
    """web, three days from T0: a check every 10 minutes (down for 30 minutes on day one,
    an expired one now and then, the first two hours of day two in maintenance), its status
    up, down 30 minutes, up again, and the incident of that outage."""
    for table in TABLES:
        await ch.command(f"TRUNCATE TABLE {table}")
    await pool.execute("TRUNCATE incidents, incident_notes, maintenance_windows")
    await create_monitors(api, [WEB, DB])
    results = [check_result("web", t, outcome_at(t), region="eu", latency_ms=100.0,
                            maintenance=T0 + 24 * HOUR <= t < T0 + 26 * HOUR)
               for t in range(T0, T0 + 72 * HOUR, 10 * MINUTE)]
    await write(ch, results + results[::7])
    events = [change("web", T0, "up"), change("web", T0 + 10 * HOUR, "down", "up"),
              change("web", T0 + 10 * HOUR + 30 * MINUTE, "up", "down")]
    await ch.insert("status_events", [status_row(e) for e in events], STATUS_COLUMNS)
    await pool.execute("INSERT INTO incidents (id, monitor_id, opened_ms, resolved_ms) "
                       "VALUES ($1, 'web', $2, $3)", f"web:{T0 + 10 * HOUR}", T0 + 10 * HOUR,
                       T0 + 10 * HOUR + 30 * MINUTE)


async def sla(api: TestClient, **query: str) -> dict[str, Any]:
    resp = await api.get("/api/v1/monitors/web/sla", params=query)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


RANGE = {"from": "2026-03-02", "to": "2026-03-04"}


async def test_figures_per_day_and_in_total(api: TestClient, ch: ClickHouse, history: None
                                            ) -> None:
    body = await sla(api, **RANGE, by="day")
    assert [p["from"][:10] for p in body["periods"]] == ["2026-03-02", "2026-03-03",
                                                         "2026-03-04"]
    first, second, _ = body["periods"]
    assert first["downtime_minutes"] == 30
    assert first["time_ms"] == {"up": 24 * HOUR - 30 * MINUTE, "down": 30 * MINUTE,
                                "unknown": 0, "untracked": 0}
    assert first["uptime_by_time_percent"] == round(100 * (1 - 30 / (24 * 60)), 4)
    expired = sum(1 for t in range(T0, T0 + 24 * HOUR, 10 * MINUTE)
                  if outcome_at(t) == "expired")
    assert first["checks"] == {"up": 144 - 3 - expired, "down": 3, "degraded": 0,
                               "unknown": expired}  # the redelivered copies fold
    assert first["uptime_by_checks_percent"] == round(100 * (141 - expired) / (144 - expired),
                                                      4)
    assert (first["incidents"], first["mttr_minutes"]) == (1, 30)
    assert second["maintenance"]["excluded_checks"] == 12
    assert sum(second["checks"].values()) - second["checks"]["degraded"] == 144 - 12
    assert (second["incidents"], second["mttr_minutes"]) == (0, None)
    assert abs(first["latency_ms"]["p99"] - 100) <= 0.6
    total = body["total"]
    assert total["downtime_minutes"] == 30
    assert total["incidents"] == 1
    assert total["maintenance"]["excluded_checks"] == 12
    assert total["checks"]["down"] == 3
    assert total["uptime_by_time_percent"] == round(100 * (1 - 30 / (72 * 60)), 4)

    # Settled or not, the same answer.
    await rollups.settle(ch, T0 + 100 * HOUR)
    assert await sla(api, **RANGE, by="day") == body


async def test_weeks_months_and_partial_edges(api: TestClient, history: None) -> None:
    weeks = await sla(api, **RANGE, by="week")
    days = await sla(api, **RANGE, by="day")
    assert len(weeks["periods"]) == 1
    assert weeks["total"] == days["total"]
    months = await sla(api, **{"from": "2026-02-20", "to": "2026-03-10"}, by="month")
    assert [p["from"][:10] for p in months["periods"]] == ["2026-02-20", "2026-03-01"]
    assert months["periods"][0]["time_ms"]["untracked"] == 9 * 24 * HOUR  # before any status
    assert months["periods"][0]["uptime_by_time_percent"] is None
    # From inside the outage to the middle of a day: only those minutes count.
    part = await sla(api, **{"from": "2026-03-02T10:20:00Z", "to": "2026-03-02T12:00:00Z"})
    assert part["total"]["downtime_minutes"] == 10
    assert part["total"]["checks"]["down"] == 1


@pytest.mark.parametrize(("query", "field"), [
    ({"from": "yesterday"}, "from"), ({"to": "2026-13-40"}, "to"), ({"by": "year"}, "by"),
    ({"from": "2026-03-04", "to": "2026-03-01"}, "to"),
    ({"from": "2025-01-01", "to": "2026-03-01"}, "to"), ({"to": "9999-12-31"}, "to"),
    ({"from": "1969-12-01", "to": "1970-01-02"}, "from"),
    ({"from": "0001-01-01T00:00:00+14:00"}, "from")])
async def test_bad_input_names_the_parameter(api: TestClient, history: None,
                                             query: dict[str, str], field: str) -> None:
    resp = await api.get("/api/v1/monitors/web/sla", params=query)
    assert resp.status == 422
    assert [e["field"] for e in (await resp.json())["errors"]] == [field]


async def test_unknown_monitor_and_no_token(api: TestClient, client: TestClient,
                                            history: None) -> None:
    assert (await api.get("/api/v1/monitors/nope/sla")).status == 404
    assert (await client.get("/api/v1/monitors/web/sla")).status == 401


async def test_every_monitor_or_those_with_a_tag(api: TestClient, history: None) -> None:
    one = await sla(api, **RANGE, by="week")
    resp = await api.get("/api/v1/sla", params={**RANGE, "by": "week", "tag": "shop"})
    assert resp.status == 200
    shop = await resp.json()
    assert [m["monitor_id"] for m in shop["monitors"]] == ["web"]
    assert shop["monitors"][0]["total"] == one["total"]
    every = await (await api.get("/api/v1/sla", params=RANGE)).json()
    assert [m["monitor_id"] for m in every["monitors"]] == ["db", "web"]
    db = every["monitors"][0]["total"]
    assert db["checks"] == {"up": 0, "down": 0, "degraded": 0, "unknown": 0}
    assert db["uptime_by_checks_percent"] is None
    resp = await api.get("/api/v1/sla", params={"by": "hour"})
    assert resp.status == 422


def test_periods_and_moments() -> None:
    day = rollups.DAY_MS
    since = rollups.moment_ms("2026-02-25T06:00:00Z")
    until = rollups.moment_ms("2026-03-10", end=True)
    assert until == rollups.moment_ms("2026-03-11T00:00:00+00:00")
    assert rollups.moment_ms("2026-03-02T01:00:00+01:00") == T0
    weeks = rollups.edges(since, until, "week")
    assert weeks == [since, T0, T0 + 7 * day, until]  # Mondays
    assert rollups.edges(since, until, "month") == [since, T0 - day, until]
    assert len(rollups.edges(since, until, "day")) == 15  # February 25 (from 06:00) to March 10
    with pytest.raises(ValueError, match="ISO 8601"):
        rollups.moment_ms("2026-02-30")


async def test_vigil_report_reads_clickhouse_itself_when_it_is_named(
        history: None, postgres_dsn: str, clickhouse_url: str, tmp_path: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args(["report", "--from", "2026-03-02", "--to", "2026-03-04", "--by",
                                "week", "--tag", "shop", "--format", "json", "--data-dir",
                                str(tmp_path), "--clickhouse-url", clickhouse_url])
    settings = Settings(postgres_dsn=postgres_dsn, clickhouse_url=clickhouse_url)
    await report.run(settings, args)
    document = orjson.loads(capsys.readouterr().out)
    assert [m["monitor_id"] for m in document["monitors"]] == ["web"]
    assert document["monitors"][0]["total"]["downtime_minutes"] == 30
