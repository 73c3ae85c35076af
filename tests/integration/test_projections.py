"""The events stream's projections on a real redis-server, Postgres and chDB: the incidents
sink (incidents, confirmed_status, confirmed_history) and the status-events sink (ClickHouse
status_events): rows as expected, a redelivery (read, never acknowledged, claimed by another
consumer) gives the same rows, an older event never moves a status back, bad events are
dead-lettered and the rest goes on."""

from __future__ import annotations

import time
from typing import Any

import pytest

from engine.incidents import DOWNTIME_SQL, TABLES
from engine.keys import PROJECTION_GROUP
from engine.settings import Settings
from sinks.incidents import IncidentsSink
from sinks.status_events import StatusEventsSink
from tests.support.events import (
    change,
    clear_projections,
    opened,
    projection,
    publish,
    resolved,
    run_until_done,
)

SETTINGS = Settings(sink_batch_size=100, sink_flush_ms=50, max_timeout_ms=200,
                    claim_grace_ms=100, instance_id="projection-a")
# Within status_events' 400-day TTL, so no merge drops what a test wrote.
T0 = int(time.time()) * 1000 - 3_600_000
MIN = 60_000


@pytest.fixture
async def empty(pool, ch) -> None:
    await clear_projections(pool, ch)


def incidents_sink(r, keys, postgres_dsn, settings: Settings = SETTINGS) -> IncidentsSink:
    return IncidentsSink(r, keys, settings, postgres_dsn=postgres_dsn)


def outage(monitor_id: str = "web", start: int = T0, end: int = T0 + 5 * MIN) -> list[Any]:
    """What the evaluator writes for one confirmed outage of a monitor in two regions, one of
    them down: the region's change, the monitor's, the incident; then all back up."""
    regions_down = {"eu": "down", "us": "up"}
    return [
        change(monitor_id, start, "down", "up", region="eu", check_id=f"{monitor_id}:eu:{start}"),
        change(monitor_id, start, "down", "up", regions=regions_down),
        opened(monitor_id, start, first_check_id=f"{monitor_id}:eu:{start - MIN}",
               regions=regions_down, error_kind="connect", error="refused"),
        change(monitor_id, end, "up", "down", region="eu"),
        change(monitor_id, end, "up", "down", regions={"eu": "up", "us": "up"}),
        resolved(monitor_id, start, end, first_check_id=f"{monitor_id}:eu:{start - MIN}",
                 regions={"eu": "up", "us": "up"}),
    ]


async def test_an_outage_is_projected(r, keys, pool, postgres_dsn, empty):
    await publish(r, keys, outage())
    await run_until_done(incidents_sink(r, keys, postgres_dsn), r)
    incident = await pool.fetchrow("SELECT * FROM incidents")
    assert dict(incident) == {
        "id": f"web:{T0}", "monitor_id": "web", "opened_ms": T0, "resolved_ms": T0 + 5 * MIN,
        "duration_ms": 5 * MIN, "first_check_id": f"web:eu:{T0 - MIN}",
        "regions": '{"eu": "down", "us": "up"}', "folded_into": None, "maintenance": False,
        "error_kind": "connect", "error": "refused", "reason": None,
        "opened_event": f"incident.opened:web:eu:{T0}",
        "resolved_event": f"incident.resolved:web:eu:{T0 + 5 * MIN}",
        "acknowledged_by": None, "acknowledged_at": None}
    status = await pool.fetch("SELECT region, status, previous, since_ms, event_id "
                              "FROM confirmed_status ORDER BY region")
    assert [tuple(s.values()) for s in status] == [
        ("*", "up", "down", T0 + 5 * MIN, f"monitor.changed:web:eu:{T0 + 5 * MIN}"),
        ("eu", "up", "down", T0 + 5 * MIN, f"status.changed:web:eu:{T0 + 5 * MIN}")]
    history = await pool.fetch("SELECT region, at_ms, status, previous, check_id "
                               "FROM confirmed_history ORDER BY at_ms, region")
    assert [tuple(h.values()) for h in history] == [
        ("*", T0, "down", "up", None), ("eu", T0, "down", "up", f"web:eu:{T0}"),
        ("*", T0 + 5 * MIN, "up", "down", None), ("eu", T0 + 5 * MIN, "up", "down", None)]


async def test_a_redelivered_batch_gives_the_same_rows(r, keys, pool, postgres_dsn, empty):
    """A sink that wrote its batch and died before XACK (SIGKILL): another consumer claims the
    entries and writes them again; nothing changes."""
    await publish(r, keys, outage())
    crashed = incidents_sink(r, keys, postgres_dsn, Settings(instance_id="projection-crashed"))
    await crashed.start()
    try:
        entries = await crashed.consumer.read(100, 100)
        assert len(entries) == 6
        await crashed.write([e for _, e in await crashed._decode(entries)])
    finally:
        await crashed.close()
    written = await projection(pool)
    assert len(written["confirmed_history"]) == 4
    successor = incidents_sink(r, keys, postgres_dsn)
    await run_until_done(successor, r)
    assert await projection(pool) == written
    assert (await r.xpending(keys.events, PROJECTION_GROUP))["pending"] == 0
    # And the same events published again (an evaluator's re-run) change nothing either.
    await publish(r, keys, outage())
    await run_until_done(incidents_sink(r, keys, postgres_dsn), r)
    assert await projection(pool) == written


async def test_an_older_event_never_moves_the_status_back(r, keys, pool, postgres_dsn, empty):
    newer = change("web", T0 + 2 * MIN, "down", "up")
    older = change("web", T0 + MIN, "up", "down")
    await publish(r, keys, [newer])
    await run_until_done(incidents_sink(r, keys, postgres_dsn), r)
    await publish(r, keys, [older])
    await run_until_done(incidents_sink(r, keys, postgres_dsn), r)
    row = await pool.fetchrow("SELECT status, since_ms, event_id FROM confirmed_status")
    assert tuple(row.values()) == ("down", T0 + 2 * MIN, newer.id)
    # The older one still enters the history, where it belongs.
    history = await pool.fetch("SELECT at_ms, status FROM confirmed_history ORDER BY at_ms")
    assert [tuple(h.values()) for h in history] == [(T0 + MIN, "up"), (T0 + 2 * MIN, "down")]
    # Within one batch as well: the newest of the batch wins, whatever its place in it.
    await publish(r, keys, [change("api", T0 + 3 * MIN, "down", "up"),
                            change("api", T0 + MIN, "up", "unknown")])
    await run_until_done(incidents_sink(r, keys, postgres_dsn), r)
    assert await pool.fetchval(
        "SELECT status FROM confirmed_status WHERE monitor_id = 'api'") == "down"


async def test_a_resolve_before_its_opening_fills_both(r, keys, pool, postgres_dsn, empty):
    """The opening's entry was claimed from a crashed sink after the resolve was written: the
    incident ends the same as in order, with the opening's own regions."""
    events = outage()
    opening, resolve = events[2], events[5]
    await publish(r, keys, [resolve])
    await run_until_done(incidents_sink(r, keys, postgres_dsn), r)
    row = await pool.fetchrow("SELECT resolved_ms, opened_event FROM incidents")
    assert tuple(row.values()) == (T0 + 5 * MIN, None)
    await publish(r, keys, [opening])
    await run_until_done(incidents_sink(r, keys, postgres_dsn), r)
    in_reverse = await projection(pool)
    await pool.execute(f"TRUNCATE {', '.join(TABLES)}")
    for event in (opening, resolve):  # in order, each in a batch of its own
        await publish(r, keys, [event])
        await run_until_done(incidents_sink(r, keys, postgres_dsn), r)
    assert await projection(pool) == in_reverse
    assert in_reverse["incidents"][0][6] == '{"eu": "down", "us": "up"}'


async def test_bad_events_are_dead_lettered_and_the_rest_written(r, keys, pool, postgres_dsn,
                                                                  empty):
    good = change("web", T0, "down", "up")
    await publish(r, keys, [
        b"not json",
        b'{"v": 1, "type": "status.changed", "id": "x", "monitor_id": "web", "at_ms": 1}',
        b'{"v": 1, "type": "incident.opened", "id": "y", "monitor_id": "web", "at_ms": 1}',
        b'{"v": 9, "type": "monitor.changed", "id": "z", "monitor_id": "web", "at_ms": 1}',
        good])
    await run_until_done(incidents_sink(r, keys, postgres_dsn), r)
    assert await pool.fetchval("SELECT event_id FROM confirmed_status") == good.id
    letters = [fields for _, fields in await r.xrange(keys.deadletter)]
    assert [f[b"stream"] for f in letters] == [keys.events.encode()] * 4
    reasons = b" | ".join(f[b"reason"] for f in letters)
    for expected in (b"not JSON", b"'status' is missing", b"'incident_id' is missing",
                     b"version is 9"):
        assert expected in reasons


async def test_status_events_in_clickhouse_and_the_downtime(r, keys, ch, empty):
    events = [*outage(), *outage(start=T0 + 20 * MIN, end=T0 + 22 * MIN)]
    events.append(change("web", T0 + 30 * MIN, "down", "up"))  # still down
    await publish(r, keys, events)
    await run_until_done(StatusEventsSink(r, keys, SETTINGS, ch=ch), r)
    # The same events again (a redelivery) fold into the rows they repeat.
    await publish(r, keys, events)
    await run_until_done(StatusEventsSink(r, keys, SETTINGS, ch=ch), r)
    [(rows, unique)] = await ch.rows("SELECT count(), uniqExact(event_id) FROM status_events FINAL")
    assert (rows, unique) == (9, 9)  # 4 changes per outage, one more; no incident events
    downtime = await ch.rows(DOWNTIME_SQL, {"monitor_id": "web"})
    ms = [(int(start.timestamp() * 1000), until and int(until.timestamp() * 1000))
          for _, start, until, _ in downtime]
    assert ms == [(T0, T0 + 5 * MIN), (T0 + 20 * MIN, T0 + 22 * MIN), (T0 + 30 * MIN, None)]
