"""`vigil replay` against the live pipeline: a scripted sequence of results goes through the
real evaluator (on a real redis-server), the real ClickHouse sink (chDB) and the real
incidents sink (Postgres); rebuilding the projection from ClickHouse gives the same rows."""

from __future__ import annotations

import pytest

from engine.clock import redis_ms
from engine.keys import EVENT_GROUPS, RESULT_GROUPS
from engine.rules import Rules
from engine.settings import Settings
from engine.streams import EVENT_FIELD, ensure_group
from evaluator.service import Evaluator
from executors.kinds import SCHEMA
from sinks.clickhouse import ClickHouseSink
from sinks.incidents import IncidentsSink
from tests.support.events import clear_projections, projection, run_until_done
from tests.support.helpers import check_result, store_monitors
from vigil import cli
from vigil.admin import CommandError
from vigil.replay import replay
from vigil.replay import results as results_of

SETTINGS = Settings(sink_batch_size=100, sink_flush_ms=50, instance_id="replay-live")
INTERVAL = 60_000
HTTP = {"kind": "http", "interval": "60s", "http": {"url": "http://127.0.0.1:9/"}}
MONITORS = [
    {**HTTP, "id": "uplink", "regions": ["eu"], "alerting": {"confirm_down": 2}},
    # Down in one region is down (quorum 1); folded into the uplink's incident.
    {**HTTP, "id": "web", "regions": ["eu", "us"],
     "alerting": {"confirm_down": 2, "confirm_up": 1, "quorum": 1, "depends_on": ["uplink"]}},
    # The defaults (3 down, 2 up, a majority of two regions: both); `us` falls silent a while.
    {**HTTP, "id": "api", "regions": ["eu", "us"]},
]
# Per slot: u up, d down, g degraded, e error, x expired, m down inside a muted maintenance
# window, '.' no result.
SCRIPT = {
    "uplink": {"eu": "uddddddddddddduuu"},
    "web": {"eu": "uuuuddduuudddduuu", "us": "uuuuuuuuuuuuuuuuu"},
    "api": {"eu": "uuudddddxuuggggmmmmdddduu", "us": "uuuddddd......uuuuudddduu"},
}
OUTCOMES = {"u": "up", "d": "down", "g": "degraded", "e": "error", "x": "expired", "m": "down"}


def results(monitor_id: str, base: int, slots: range) -> list:
    out = []
    for slot in slots:
        for region, line in sorted(SCRIPT[monitor_id].items()):
            if slot < len(line) and line[slot] != ".":
                out.append(check_result(monitor_id, base + slot * INTERVAL,
                                        OUTCOMES[line[slot]], region=region,
                                        maintenance=line[slot] == "m",
                                        error_kind=None if line[slot] == "u" else "status"))
    return out


@pytest.fixture
async def live(r, keys, pool, ch, clean, postgres_dsn):
    """The script through the live pipeline; the projection it made."""
    await clear_projections(pool, ch)
    monitors = SCHEMA.parse(MONITORS)
    await store_monitors(pool, monitors, source="api")
    for row in await pool.fetch("SELECT id, interval_ms, timeout_ms, regions, "
                                "alerting::text AS alerting FROM monitors"):
        await r.hset(keys.rules, row["id"], Rules.of_row(row).to_json())
    for group in RESULT_GROUPS:
        await ensure_group(r, keys.results, group)
    for group in EVENT_GROUPS:
        await ensure_group(r, keys.events, group)
    # Dated ahead of now, so no region's staleness deadline passes while the test runs.
    base = await redis_ms(r) + 10 * INTERVAL
    evaluator = Evaluator(r, keys, SETTINGS)
    # The uplink's outage comes first and ends last, as the dependents' results see it.
    phases = [results("uplink", base, range(14)),
              results("web", base, range(20)) + results("api", base, range(30)),
              results("uplink", base, range(14, 20))]
    for phase in phases:
        for item in phase:
            await r.xadd(keys.results, {EVENT_FIELD: item.to_json()})
        await evaluator.evaluate(await evaluator.consumer.read(1000, None))
    await run_until_done(ClickHouseSink(r, keys, SETTINGS, ch=ch), r)
    await run_until_done(IncidentsSink(r, keys, SETTINGS, postgres_dsn=postgres_dsn), r)
    return await projection(pool)


async def test_replay_rebuilds_the_live_rows(pool, ch, live):
    # What the script makes live: an incident of each monitor, web's two folded into the
    # uplink's, api's region going stale, a change inside maintenance.
    folded = await pool.fetch("SELECT monitor_id, folded_into FROM incidents ORDER BY id")
    uplink = next(i[0] for i in live["incidents"] if i[1] == "uplink")
    assert [tuple(f.values()) for f in folded] == [
        ("api", None), ("uplink", None), ("web", uplink), ("web", uplink)]
    assert any(h[0].endswith(":stale") for h in live["confirmed_history"])
    assert any(h[7] for h in live["confirmed_history"])
    scripted = sum(len(line) - line.count(".") for m in SCRIPT.values() for line in m.values())
    evaluated, events = await replay(pool, ch, truncate=True)
    assert evaluated == scripted
    # Every change and incident event, and monitoring.degraded/restored (not projected).
    assert events > len(live["confirmed_history"]) + 2 * len(live["incidents"])
    assert await projection(pool) == live


async def test_the_command_replays(pool, ch, live, postgres_dsn, clickhouse_url, capsys):
    """`vigil replay --yes` as the CLI runs it (on this process's chDB: one per data path)."""
    await cli.cmd_replay(Settings(postgres_dsn=postgres_dsn, clickhouse_url=clickhouse_url),
                         truncate=True)
    assert capsys.readouterr().out.startswith("replayed 95 results into ")
    assert await projection(pool) == live
    assert await ch.command("SELECT 1") == 1  # the shared client is still open


async def test_replay_refuses_tables_with_rows_unless_told(pool, ch, live):
    with pytest.raises(CommandError, match="--yes"):
        await replay(pool, ch, truncate=False)
    assert await projection(pool) == live
    await clear_projections(pool, ch)
    await replay(pool, ch, truncate=False)
    assert await projection(pool) == live


async def test_results_are_read_in_pages_without_a_gap(ch, live):
    whole = [r async for page in results_of(ch) for r in page]
    paged = [r async for page in results_of(ch, page=7) for r in page]
    assert paged == whole
    assert len({r.check_id for r in whole}) == len(whole) == sum(
        len(line) - line.count(".") for m in SCRIPT.values() for line in m.values())
