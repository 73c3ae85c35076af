"""The `vigil` command line as a user runs it: clear errors, nothing half-written."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from tests.conftest import vigil_env

pytestmark = pytest.mark.e2e


def vigil(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], env=vigil_env(**env),
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("VIGIL_CONCURRENCY", "many", "VIGIL_CONCURRENCY='many': expected an integer >= 1"),
    ("VIGIL_REDIS_URL", "http://x", "VIGIL_REDIS_URL='http://x': expected a URL"),
    ("VIGIL_LOG_FORMAT", "xml", "VIGIL_LOG_FORMAT='xml': expected one of console, json"),
])
def test_a_bad_variable_stops_start_up_with_one_line(name, value, message):
    done = vigil("executor", **{name: value})
    assert done.returncode == 2
    assert done.stderr.strip() == f"vigil: {message}" or message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


async def test_apply_validates_everything_before_writing(tmp_path, pool, postgres_dsn):
    await pool.execute("TRUNCATE monitors, monitor_status")
    env = {"VIGIL_POSTGRES_DSN": postgres_dsn,
           "VIGIL_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}"}
    assert (await asyncio.to_thread(vigil, "migrate", **env)).returncode == 0
    good = {"id": "good", "kind": "tcp", "interval": "30s",
            "tcp": {"host": "127.0.0.1", "port": 5432}}
    bad = {"id": "bad", "kind": "http", "interval": "30s", "http": {"url": "nowhere"}}
    path = tmp_path / "monitors.yaml"
    path.write_text(json.dumps({"monitors": [good, bad]}))
    done = await asyncio.to_thread(vigil, "monitors", "apply", "-f", str(path), **env)
    assert done.returncode == 2
    assert "monitor 'bad' (" in done.stderr
    assert "http.url" in done.stderr
    assert await pool.fetchval("SELECT count(*) FROM monitors") == 0

    path.write_text(json.dumps({"monitors": [good]}))
    done = await asyncio.to_thread(vigil, "monitors", "apply", "-f", str(path), **env)
    assert done.returncode == 0, done.stderr
    assert "1 created, 0 updated, 0 unchanged" in done.stdout
    done = await asyncio.to_thread(vigil, "monitors", "apply", "-f", str(path), **env)
    assert "0 created, 0 updated, 1 unchanged" in done.stdout
    good["interval"] = "1m"
    path.write_text(json.dumps({"monitors": [good]}))
    done = await asyncio.to_thread(vigil, "monitors", "apply", "-f", str(path), **env)
    assert "0 created, 1 updated, 0 unchanged" in done.stdout
    row = await pool.fetchrow("SELECT interval_ms, version, source FROM monitors")
    assert (row["interval_ms"], row["version"], row["source"]) == (60_000, 2, "file")
