"""Input limits end to end, on the embedded Postgres: what the model refuses is a 422 from the
API and one line from `monitors apply` with nothing written; what it accepts up to every
maximum fits the columns; the columns refuse what the model would (CHECK constraints); and
`public_details` goes from a definition to the status rows."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from engine import monitors as limits
from engine import store
from engine.migrate import load, migrate
from engine.monitors import SpecError
from engine.secrets import Keyring
from executors.kinds import SCHEMA
from tests.support.helpers import vigil_env
from vigil import admin


def tcp(mid: str = "db", **fields: Any) -> dict[str, Any]:
    return {"id": mid, "kind": "tcp", "tcp": {"host": "127.0.0.1", "port": 9}, **fields}


# --- the API -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("interval", "ms"), [("30d", 2_592_000_000), ("365d", 31_536_000_000)])
async def test_the_api_stores_intervals_past_int32(api, interval: str, ms: int) -> None:
    """Before: 500 with a traceback (integer out of range for the int32 column)."""
    resp = await api.post("/api/v1/monitors", json=tcp(interval=interval))
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["interval_ms"] == ms
    assert (await (await api.get("/api/v1/monitors/db")).json())["interval_ms"] == ms


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"interval": "366d"}, "interval_ms", "less than or equal to 31536000000"),
    ({"interval": 1e308}, "interval", "longer than 3650d"),
    ({"interval_ms": 1e308}, "interval_ms", "integer"),
    ({"interval_ms": 10**15}, "interval_ms", "less than or equal to"),
    ({"interval": "1000.5ms"}, "interval", "whole number of milliseconds"),
    ({"interval": -1}, "interval", "negative"),
    ({"interval": "1d", "timeout": "2h"}, "timeout_ms", "less than or equal to 3600000"),
    ({"tags": ["t"] * 33}, "tags", "at most 32 items"),
])
async def test_the_api_answers_422_naming_the_field(api, pool, fields: dict[str, Any],
                                                   field: str, message: str) -> None:
    """Before: 366d and 1e308 were a 500 (an int32 overflow, an OverflowError), 2h and 33 tags
    were stored."""
    resp = await api.post("/api/v1/monitors", json=tcp(**fields))
    body = await resp.json()
    assert resp.status == 422, body
    [error] = body["errors"]
    assert error["field"] == field
    assert message in error["message"]
    assert await pool.fetchval("SELECT count(*) FROM monitors") == 0


async def test_a_patch_past_the_limit_changes_nothing(api, pool) -> None:
    assert (await api.post("/api/v1/monitors", json=tcp(interval="1h"))).status == 201
    resp = await api.patch("/api/v1/monitors/db", json={"interval": "400d"})
    assert resp.status == 422, await resp.text()
    assert await pool.fetchval("SELECT (interval_ms, version)::text FROM monitors") == "(3600000,1)"


# --- monitors apply ----------------------------------------------------------------------------

def monitors_file(path: Path, *entries: dict[str, Any]) -> str:
    # PyYAML writes 1e308 as 1.0e+308, which it reads back as a float (YAML 1.1 wants the dot).
    path.write_text(yaml.safe_dump({"monitors": list(entries)}))
    return str(path)


async def test_apply_refuses_an_interval_past_the_maximum_and_writes_nothing(
        tmp_path, pool, clean) -> None:
    """Before: 400d passed validation and the insert failed with a DataError traceback."""
    path = monitors_file(tmp_path / "m.yaml", tcp("fine", interval="30d"),
                         tcp("far", interval="400d"))
    with pytest.raises(SpecError) as info:
        await admin.apply(pool, path, prune=False, dry_run=False)
    assert info.value.problems == [
        f"monitor 'far' ({path}: monitors[1]): interval_ms: Input should be less than or "
        "equal to 31536000000"]
    assert await pool.fetchval("SELECT count(*) FROM monitors") == 0


def vigil(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vigil.cli", *args], env=vigil_env(**env),
                          capture_output=True, text=True, timeout=120, check=False)


async def test_the_apply_command_says_one_line_and_exits_non_zero(
        tmp_path, pool, clean, postgres_dsn, redis_url) -> None:
    """Before: `interval: 1e308` was a traceback (OverflowError) and `30d` another (the int32
    column), both with exit status 1."""
    env = {"VIGIL_POSTGRES_DSN": postgres_dsn, "VIGIL_REDIS_URL": redis_url}
    path = monitors_file(tmp_path / "m.yaml", tcp("fine", interval="30d"),
                         tcp("huge", interval=1e308))
    done = await asyncio.to_thread(vigil, "monitors", "apply", "-f", path, **env)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"vigil: monitor 'huge' ({path}: monitors[1]): interval: 1e+308 is longer than 3650d"]
    assert await pool.fetchval("SELECT count(*) FROM monitors") == 0

    path = monitors_file(tmp_path / "m.yaml", tcp("fine", interval="30d"))
    done = await asyncio.to_thread(vigil, "monitors", "apply", "-f", path, **env)
    assert done.returncode == 0, done.stderr
    assert await pool.fetchval("SELECT interval_ms FROM monitors") == 2_592_000_000


# --- the columns -------------------------------------------------------------------------------

async def test_every_maximum_fits_the_columns(pool, clean) -> None:
    """Before: the interval overflowed the int32 column."""
    entry = tcp("x" * 128, name="n" * limits.MAX_NAME_LENGTH, interval="365d", timeout="1h",
                regions=[f"r{i}" for i in range(limits.MAX_REGIONS)],
                tags=["t" * limits.MAX_TAG_LENGTH] * limits.MAX_TAGS)
    [monitor] = SCHEMA.parse([entry])
    async with pool.acquire() as conn:
        assert await store.upsert(conn, monitor, "api", Keyring.from_env()) is True
    row = await store.get(pool, monitor.id)
    # An `alerting:` with only defaults, and `critical: false`, are stored as nothing, and
    # read back without them.
    assert store.definition(row) == monitor.model_dump(mode="json",
                                                       exclude={"alerting", "critical"})


INSERT = """INSERT INTO monitors (id, name, kind, interval_ms, timeout_ms, regions, tags, spec)
            VALUES ($1, $2, 'tcp', $3, $4, $5, $6, '{}')"""


@pytest.mark.parametrize(("column", "value"), [
    ("interval_ms", limits.MAX_INTERVAL_MS + 1),
    ("timeout_ms", limits.MAX_TIMEOUT_MS + 1),
    ("timeout_ms", limits.MIN_TIMEOUT_MS - 1),
    ("id", "x" * 129),
    ("name", "n" * (limits.MAX_NAME_LENGTH + 1)),
    ("regions", [f"r{i}" for i in range(limits.MAX_REGIONS + 1)]),
    ("regions", []),
    ("regions", ["r" * 33]),
    ("tags", ["t"] * (limits.MAX_TAGS + 1)),
    ("tags", ["ok", "t" * (limits.MAX_TAG_LENGTH + 1)]),
])
async def test_the_columns_refuse_what_the_model_refuses(pool, clean, column: str,
                                                         value: Any) -> None:
    """A write that does not go through the model (a hand-run UPDATE, a future code path) meets
    the same limits. Before: no such constraint (the interval: an int32 overflow)."""
    good: dict[str, Any] = {"id": "ok", "name": "", "interval_ms": limits.MAX_INTERVAL_MS,
                            "timeout_ms": limits.MAX_TIMEOUT_MS, "regions": ["default"],
                            "tags": ["t" * limits.MAX_TAG_LENGTH] * limits.MAX_TAGS}
    await pool.execute(INSERT, *good.values())
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(INSERT, *{**good, "id": "bad", column: value}.values())


async def test_the_upgrade_keeps_rows_written_before_the_limits(ch, pool, postgres_dsn) -> None:
    """A database at version 5 with a monitor past today's limits (40 tags) migrates, keeps the
    row and its interval, and refuses the next write that keeps it past them."""
    await pool.execute("DROP DATABASE IF EXISTS upgrade")
    await pool.execute("CREATE DATABASE upgrade")
    dsn = postgres_dsn.replace("/postgres?", "/upgrade?")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE vigil_schema_migrations (version integer PRIMARY KEY, "
                           "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        for m in load("postgres"):
            if m.version <= 5:
                await conn.execute(m.sql)
                await conn.execute("INSERT INTO vigil_schema_migrations VALUES ($1, $2)",
                                   m.version, m.name)
        await conn.execute(INSERT, "old", "", 60_000, 10_000, ["default"], ["t"] * 40)
        assert 6 in (await migrate(dsn, ch))["postgres"]
        assert await conn.fetchval("SELECT (interval_ms, cardinality(tags), public_details)::text "
                                   "FROM monitors") == "(60000,40,f)"
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE monitors SET name = 'touched'")
    finally:
        await conn.close()
        await pool.execute("DROP DATABASE upgrade")


# --- public_details ----------------------------------------------------------------------------

async def test_public_details_round_trips_to_the_status_rows(tmp_path, pool, clean) -> None:
    """Off unless a definition says so; stored, shown, diffed by apply, and in every status
    row. Before: `public_details` was an unknown field."""
    path = monitors_file(tmp_path / "m.yaml", tcp("hidden"), tcp("shown", public_details=True))
    await admin.apply(pool, path, prune=False, dry_run=False)
    rows = {r["id"]: r for r in await store.status_rows(pool)}
    assert {mid: r["public_details"] for mid, r in rows.items()} == {"hidden": False,
                                                                    "shown": True}
    row = await store.get(pool, "shown")
    assert store.described(row)["public_details"] is True

    flipped = SCHEMA.parse([tcp("hidden", public_details=True), tcp("shown")])
    plan = await store.apply(pool, flipped, prune=False, dry_run=False,
                              keyring=Keyring.from_env())
    assert plan.lines() == ["~ update hidden (public_details)", "~ update shown (public_details)"]
    assert {r["id"]: r["public_details"] for r in await store.status_rows(pool)} == {
        "hidden": True, "shown": False}


async def test_public_details_through_the_api(api) -> None:
    resp = await api.post("/api/v1/monitors", json=tcp(public_details=True))
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["public_details"] is True
    resp = await api.patch("/api/v1/monitors/db", json={"public_details": None})
    assert (await resp.json())["public_details"] is False
    listed = await (await api.get("/api/v1/monitors")).json()
    assert [m["public_details"] for m in listed["monitors"]] == [False]
