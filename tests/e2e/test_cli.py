"""The `vigil` command line as a user runs it: clear errors, nothing half-written."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from tests.support.helpers import free_port, vigil_env

pytestmark = pytest.mark.e2e


def vigil(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vigil.cli", *args], env=vigil_env(**env),
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


def test_migrate_prints_the_clickhouse_ddl_and_changes_nothing(tmp_path):
    """`vigil migrate --print-sql` shows what migrate would run and writes nothing; a cluster
    name with chDB is refused with the variable named."""
    url = f"chdb://{tmp_path / 'ch'}"
    done = vigil("migrate", "--print-sql", VIGIL_CLICKHOUSE_URL=url)
    assert done.returncode == 0, done.stderr
    assert "CREATE TABLE IF NOT EXISTS check_results" in done.stdout
    assert "ON CLUSTER" not in done.stdout
    refused = vigil("migrate", "--print-sql", VIGIL_CLICKHOUSE_URL=url,
                    VIGIL_CLICKHOUSE_CLUSTER="vigil")
    assert refused.returncode == 2
    assert "VIGIL_CLICKHOUSE_CLUSTER='vigil': chDB runs no cluster" in refused.stderr


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


async def test_monitor_and_token_commands(tmp_path, pool, postgres_dsn):
    await pool.execute("TRUNCATE monitors, monitor_status, api_tokens")
    env = {"VIGIL_POSTGRES_DSN": postgres_dsn}
    path = tmp_path / "monitors"
    path.mkdir()
    (path / "a.yaml").write_text(json.dumps({"monitors": [
        {"id": "db", "kind": "tcp", "interval": "30s", "tags": ["data"],
         "tcp": {"host": "127.0.0.1", "port": 5432}},
        {"id": "beat", "kind": "push", "interval": "1h"}]}))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return vigil(*args, **env)

    done = await asyncio.to_thread(run, "monitors", "apply", "-f", str(path), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "+ create beat" in done.stdout
    assert "dry run, nothing written: 2 to create" in done.stdout
    assert await pool.fetchval("SELECT count(*) FROM monitors") == 0
    assert (await asyncio.to_thread(run, "monitors", "apply", "-f", str(path))).returncode == 0

    listed = (await asyncio.to_thread(run, "monitors", "list", "--tag", "data")).stdout
    assert "db" in listed
    assert "beat" not in listed
    shown = (await asyncio.to_thread(run, "monitors", "show", "beat")).stdout
    assert "push_url: /api/v1/push/" in shown
    assert "paused" in (await asyncio.to_thread(run, "monitors", "pause", "db")).stdout
    assert await pool.fetchval("SELECT enabled FROM monitors WHERE id = 'db'") is False
    assert (await asyncio.to_thread(run, "monitors", "resume", "db")).returncode == 0
    assert (await asyncio.to_thread(run, "monitors", "delete", "db")).returncode == 0
    missing = await asyncio.to_thread(run, "monitors", "show", "db")
    assert (missing.returncode, missing.stderr.strip()) == (1, "vigil: no monitor 'db'")

    created = await asyncio.to_thread(run, "tokens", "create", "--name", "ci")
    token = created.stdout.splitlines()[0]
    assert token.startswith("vigil_")
    assert token not in str(await pool.fetch("SELECT * FROM api_tokens"))
    assert "ci" in (await asyncio.to_thread(run, "tokens", "list")).stdout
    assert (await asyncio.to_thread(run, "tokens", "revoke", "--name", "ci")).returncode == 0


def test_an_unreachable_redis_at_start_is_one_json_line_and_exit_3():
    port = free_port()  # nothing listens there
    done = subprocess.run([sys.executable, "-m", "vigil.cli", "executor"],
                          env=vigil_env(VIGIL_REDIS_URL=f"redis://:secret@127.0.0.1:{port}/0",
                                        VIGIL_LOG_FORMAT="json"),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 3
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    errors = [line for line in lines if line["level"] == "error"]
    assert [e["event"] for e in errors] == ["cannot reach a server; exiting"]
    assert str(port) in errors[0]["error"]
    assert "Traceback" not in done.stderr
    assert "secret" not in done.stderr
