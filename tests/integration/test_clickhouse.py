"""The ClickHouse client (engine.clickhouse), one suite on every backend there is: embedded
chDB always, and a ClickHouse server through the http:// client when VIGIL_TEST_CLICKHOUSE_URL
names one (the compose stack's, or any test server: the suite migrates it, writes rows under
a monitor id of its own and deletes them again)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.clickhouse import ClickHouse
from engine.migrate import migrate
from sinks.clickhouse import COLUMNS, row
from tests.support.helpers import check_result, repo_root, vigil_env

SERVER_URL = "VIGIL_TEST_CLICKHOUSE_URL"
# Within the table's 400-day TTL, so no merge drops what a test wrote.
T0 = int(time.time()) * 1000 - 3_600_000
READ_BACK = (f"SELECT {', '.join(COLUMNS)} FROM check_results FINAL "
             "WHERE monitor_id = {monitor_id:String} ORDER BY scheduled")
# The same rows as they are stored, with no FINAL: after a merge, what the merge kept.
STORED = (f"SELECT {', '.join(COLUMNS)} FROM check_results "
          "WHERE monitor_id = {monitor_id:String} ORDER BY scheduled")


def as_read(values: list[Any]) -> tuple[Any, ...]:
    """A sink row as the client reads it back: clickhouse-connect returns a UTC column's times
    as naive UTC datetimes (its default tz_mode) on every backend."""
    return tuple(v.astimezone(UTC).replace(tzinfo=None) if isinstance(v, datetime) else v
                 for v in values)


@pytest.fixture(scope="module", params=["chdb", "server"])
def backend_url(request: pytest.FixtureRequest, clickhouse_url: str) -> str:
    if request.param == "chdb":
        return clickhouse_url
    url = os.environ.get(SERVER_URL)
    if not url:
        pytest.skip(f"{SERVER_URL} is not set: no ClickHouse server for the http:// client "
                    "(e.g. http://default@localhost:8123/default)")
    return url


@pytest.fixture(scope="module")
async def backend(backend_url: str, postgres_dsn: str) -> AsyncIterator[ClickHouse]:
    """The backend's shared client, migrated as `vigil migrate` does (under the Postgres
    advisory lock); on chDB it is the session's own client."""
    client = ClickHouse.from_url(backend_url)
    await migrate(postgres_dsn, client)
    yield client
    await client.close()


@pytest.fixture
async def monitor_id(backend: ClickHouse) -> AsyncIterator[str]:
    """A monitor id no other writer uses; its rows are deleted after the test."""
    monitor = f"ch-suite-{uuid.uuid4().hex[:12]}"
    yield monitor
    await backend.command("DELETE FROM check_results WHERE monitor_id = {m:String}",
                          {"m": monitor})


async def test_command_and_rows_round_trip(backend):
    assert await backend.command("SELECT 1") == 1  # what /health asks
    assert await backend.command("SELECT 'vigil'") == "vigil"
    assert await backend.rows("SELECT number, toString(number) FROM system.numbers LIMIT 3") == [
        (0, "0"), (1, "1"), (2, "2")]
    assert await backend.rows("SELECT 1 WHERE 0") == []
    assert "ReplacingMergeTree" in await backend.command("SHOW CREATE TABLE check_results")


async def test_parameters_are_bound_by_type(backend):
    # Bound by the server, never spliced into the SQL: quotes, braces and a statement stay text.
    tricky = "it's \\ {monitor_id:String}; DROP TABLE check_results --"
    assert await backend.rows("SELECT {n:UInt64} + 1, {s:String}, toTypeName({s:String})",
                              {"n": 41, "s": tricky}) == [(42, tricky, "String")]
    assert await backend.command("SELECT {n:UInt8} * 2", {"n": 21}) == 42
    # The uptime query's window: a bound millisecond count as an interval.
    [(seconds,)] = await backend.rows(
        "WITH toDateTime64('2030-01-01 00:00:00', 3, 'UTC') AS t "
        "SELECT dateDiff('second', t - toIntervalMillisecond({window_ms:UInt64}), t)",
        {"window_ms": 86_400_000})
    assert seconds == 86_400
    assert await backend.command("EXISTS TABLE check_results") == 1


async def test_sink_rows_read_back_and_a_redelivery_folds_into_one(backend, monitor_id):
    full = check_result(monitor_id, T0, "degraded", latency_ms=12.5, status_code=200,
                        phases={"dns": 1.0, "connect": 2.0, "tls": 3.0, "first_byte": 4.0,
                                "rtt_min": 0.25},
                        error_kind="tls_expiring", error="certificate expires in 5 days",
                        tls_expiry_ms=1_900_000_000_000, executor="exec-1", deliveries=2)
    bare = check_result(monitor_id, T0 + 1_000, "down", error_kind="connect", error="refused")
    later = check_result(monitor_id, T0 + 2_000)
    await backend.insert("check_results", [row(full), row(bare)], COLUMNS)
    # A sink that died before XACK: its successor writes `bare` again, in a batch of its own.
    await backend.insert("check_results", [row(bare), row(later)], COLUMNS)
    got = await backend.rows(READ_BACK, {"monitor_id": monitor_id})
    assert got == [as_read(row(result)) for result in (full, bare, later)]


async def read_back(backend: ClickHouse, monitor_id: str) -> list[tuple[Any, ...]]:
    """What FINAL reads, and then what a merge keeps: both must choose the same row."""
    final = await backend.rows(READ_BACK, {"monitor_id": monitor_id})
    [(day,)] = await backend.rows("SELECT DISTINCT toDate(scheduled) FROM check_results "
                                  "WHERE monitor_id = {monitor_id:String}",
                                  {"monitor_id": monitor_id})
    await backend.command(f"OPTIMIZE TABLE check_results PARTITION '{day}' FINAL")
    merged = await backend.rows(STORED, {"monitor_id": monitor_id})
    assert merged == final
    return final


async def test_a_late_expired_never_replaces_a_real_outcome(backend, monitor_id):
    """Issue 8.11: a late re-run's `expired`, written after the `up` it repeats, replaced it
    (ReplacingMergeTree(inserted) keeps the last insert)."""
    up = check_result(monitor_id, T0, "up", latency_ms=9.5, executor="exec-1")
    expired = check_result(monitor_id, T0, "expired", started_ms=T0 + 30_000,
                           finished_ms=T0 + 30_000, error_kind="expired", executor="exec-2",
                           deliveries=2)
    assert up.check_id == expired.check_id
    await backend.insert("check_results", [row(up)], COLUMNS)
    await backend.insert("check_results", [row(expired)], COLUMNS)
    assert await read_back(backend, monitor_id) == [as_read(row(up))]


async def test_an_expired_gives_way_to_a_real_outcome_written_after_it(backend, monitor_id):
    expired = check_result(monitor_id, T0, "expired", started_ms=T0 + 1, error_kind="expired")
    error = check_result(monitor_id, T0, "error", started_ms=T0 + 40_000,
                         finished_ms=T0 + 40_001, error_kind="max_deliveries", deliveries=6)
    await backend.insert("check_results", [row(expired)], COLUMNS)
    await backend.insert("check_results", [row(error)], COLUMNS)
    assert await read_back(backend, monitor_id) == [as_read(row(error))]


@pytest.mark.parametrize("written_first", ["earlier", "later"])
async def test_of_two_real_outcomes_the_one_started_first_stays(backend, monitor_id,
                                                                 written_first):
    """A stalled executor's `up` and the `down` of the peer that claimed and re-ran the check
    both arrive: the first observation stays, whichever was written first."""
    earlier = check_result(monitor_id, T0, "up", started_ms=T0 + 1, finished_ms=T0 + 20_000,
                           executor="stalled")
    later = check_result(monitor_id, T0, "down", started_ms=T0 + 15_000,
                         finished_ms=T0 + 15_010, error_kind="connect", executor="peer")
    order = [earlier, later] if written_first == "earlier" else [later, earlier]
    for result in order:
        await backend.insert("check_results", [row(result)], COLUMNS)
    assert await read_back(backend, monitor_id) == [as_read(row(earlier))]


async def test_users_of_one_url_share_one_client(backend, backend_url):
    first, second = ClickHouse.from_url(backend_url), ClickHouse.from_url(backend_url)
    assert first is second is backend
    await first.close()
    # One user leaving closes nothing for the others.
    assert await second.rows("SELECT 2") == [(2,)]
    await second.close()
    assert await backend.command("SELECT 1") == 1
    assert ClickHouse.from_url(backend_url) is backend
    await backend.close()


async def test_the_last_close_ends_the_client(backend, backend_url, tmp_path: Path):
    # The session keeps its chDB engine open, and a process has one: a child opens its own path.
    url = f"chdb://{tmp_path / 'data'}" if backend.embedded else backend_url
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "tests.support.clickhouse_close", url],
        cwd=repo_root(), env=vigil_env(), capture_output=True, text=True, timeout=90,
        check=False)
    assert done.returncode == 0, done.stderr[-3000:]
