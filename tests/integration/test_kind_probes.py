"""Postgres and Redis probes against real servers: the session's embedded Postgres, as a
plain role since the probe refuses its superuser (plus a scram-sha-256 pg_hba rule for one
role, so a password is really checked), the session's redis-server, and a redis-server with
requirepass started here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from engine.events import Observation
from engine.monitors import SpecError
from engine.settings import Settings
from executors.base import Context
from executors.kinds import SCHEMA
from tests.support.helpers import free_port, wait_for
from tests.support.hostile import RawServer, silent
from tests.support.kind_executor import check_due, observe, run_checks
from tests.support.pg import login_role, socket_dsn
from tests.support.servers import redis_server

ROLE = "vigil_probe_pw"
PASSWORD = "correct-h0rse-battery"
WRONG = "wr0ng-staple-9871"
REDIS_PASSWORD = "r3dis-s3cret-2231"


async def pg(ctx: Context, **spec: Any) -> Observation:
    return await observe(ctx, "postgres", spec, timeout_ms=800)


async def rd(ctx: Context, **spec: Any) -> Observation:
    return await observe(ctx, "redis", spec, timeout_ms=800)


@pytest.fixture
async def probe_dsn(pool: asyncpg.Pool, postgres_dsn: str) -> AsyncIterator[str]:
    """The session server as a role a probe runs as: no superuser, no file roles."""
    async with login_role(pool, "vigil_probe_plain") as role:
        yield socket_dsn(postgres_dsn, role)


@pytest.fixture
async def password_role(pool: asyncpg.Pool, postgres_dsn: str) -> AsyncIterator[None]:
    """A role whose password Postgres really checks: the embedded server trusts every local
    connection, so a scram-sha-256 pg_hba rule for this one role goes first, and is removed
    after the test."""
    hba = Path(await pool.fetchval("SHOW hba_file"))
    original = await asyncio.to_thread(hba.read_text)
    await pool.execute(f"DROP ROLE IF EXISTS {ROLE}")
    await pool.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
    await asyncio.to_thread(hba.write_text, f"local all {ROLE} scram-sha-256\n{original}")
    await pool.fetchval("SELECT pg_reload_conf()")

    async def enforced() -> bool:
        try:
            conn = await asyncpg.connect(socket_dsn(postgres_dsn, ROLE), password="")
        except asyncpg.InvalidPasswordError:
            return True
        await conn.close()
        return False

    await wait_for(enforced)
    try:
        yield
    finally:
        await asyncio.to_thread(hba.write_text, original)
        await pool.fetchval("SELECT pg_reload_conf()")
        await pool.execute(f"DROP ROLE IF EXISTS {ROLE}")


@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis-auth"), REDIS_PASSWORD) as port:
        yield f"127.0.0.1:{port}"


# Postgres


async def test_postgres_up(ctx, probe_dsn):
    obs = await pg(ctx, dsn=probe_dsn)
    assert (obs.outcome, obs.error) == ("up", None)
    assert set(obs.phases) == {"connect", "query"}
    assert obs.latency_ms >= obs.phases["connect"] + obs.phases["query"] - 0.01


async def test_postgres_user_query(ctx, probe_dsn):
    one = await pg(ctx, dsn=probe_dsn,
                   query="SELECT 1 FROM pg_database WHERE datname = 'postgres'")
    none = await pg(ctx, dsn=probe_dsn, query="SELECT 1 WHERE false")
    broken = await pg(ctx, dsn=probe_dsn, query="SELECT * FROM no_such_table")
    writes = await pg(ctx, dsn=probe_dsn, query="CREATE TABLE probe_wrote_this (x int)")
    assert one.outcome == "up"
    assert (none.outcome, none.error_kind, none.error) == ("down", "query",
                                                           "the query returned no row")
    assert set(none.phases) == {"connect", "query"}
    assert (broken.error_kind, "no_such_table" in broken.error) == ("query", True)
    assert broken.phases.keys() == {"connect"}
    assert (writes.error_kind, "read-only transaction" in writes.error) == ("query", True)


async def test_postgres_password_is_checked(ctx, postgres_dsn, password_role, monkeypatch):
    good = await pg(ctx, dsn=socket_dsn(postgres_dsn, ROLE, PASSWORD))
    wrong = await pg(ctx, dsn=socket_dsn(postgres_dsn, ROLE, WRONG))
    # The executor's own PGPASSWORD is never sent on a monitor's behalf.
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    ambient = await pg(ctx, dsn=socket_dsn(postgres_dsn, ROLE))
    assert good.outcome == "up"
    for obs in (wrong, ambient):
        assert (obs.outcome, obs.error_kind) == ("down", "auth")
        assert "password authentication failed" in obs.error
    assert WRONG not in wrong.error


async def test_postgres_unknown_role_is_auth(ctx, postgres_dsn):
    obs = await pg(ctx, dsn=socket_dsn(postgres_dsn, "nobody_here"))
    assert (obs.outcome, obs.error_kind) == ("down", "auth")


async def test_postgres_connect_failures(ctx):
    refused = await pg(ctx, dsn=f"postgresql://u:{WRONG}@127.0.0.1:{free_port()}/db")
    nosocket = await pg(ctx, dsn=f"postgresql://u:{WRONG}@/db?host=/nonexistent/pg")
    for obs in (refused, nosocket):
        assert (obs.outcome, obs.error_kind) == ("down", "connect")
        assert WRONG not in obs.error


async def test_postgres_dsn_from_the_environment(ctx, probe_dsn, monkeypatch):
    monkeypatch.setenv("VIGIL_TEST_BILLING_DSN", probe_dsn)
    assert (await pg(ctx, dsn_env="VIGIL_TEST_BILLING_DSN")).outcome == "up"
    missing = await pg(ctx, dsn_env="VIGIL_TEST_NOT_SET")
    assert (missing.outcome, missing.error_kind) == ("error", "config")
    assert "VIGIL_TEST_NOT_SET is not set" in missing.error
    monkeypatch.setenv("VIGIL_TEST_BILLING_DSN", f"mysql://root:{WRONG}@db/x")
    bad = await pg(ctx, dsn_env="VIGIL_TEST_BILLING_DSN")
    assert (bad.outcome, bad.error_kind) == ("error", "config")
    assert WRONG not in bad.error


def test_postgres_spec_format():
    [m] = SCHEMA.parse([{"id": "db", "kind": "postgres", "interval": "30s",
                           "postgres": {"dsn_env": "BILLING_DSN"}}])
    # Options left out stay out of the stored definition.
    assert m.postgres.model_dump(mode="json") == {"dsn_env": "BILLING_DSN", "query": "SELECT 1"}
    for bad, why in (({"dsn": f"mysql://root:{WRONG}@h/db"}, "postgresql://"),
                     ({"dsn": f"postgresql://u:{WRONG}@h/db?passfile=/etc/x"}, "passfile"),
                     ({"dsn": "postgresql://h/db", "dsn_env": "X"}, "exactly one"),
                     ({}, "exactly one"),
                     ({"dsn_env": "not a name"}, "should match pattern")):
        with pytest.raises(SpecError, match=why) as caught:
            SCHEMA.parse([{"id": "db", "kind": "postgres", "interval": "30s",
                             "postgres": bad}])
        assert WRONG not in str(caught.value)


# Redis


async def test_redis_up(ctx, redis_url):
    obs = await rd(ctx, url=redis_url)
    assert (obs.outcome, obs.error) == ("up", None)
    assert set(obs.phases) == {"connect", "query"}


async def test_redis_wrong_port_is_connect(ctx):
    obs = await rd(ctx, url=f"redis://:{WRONG}@127.0.0.1:{free_port()}/0")
    assert (obs.outcome, obs.error_kind) == ("down", "connect")
    assert WRONG not in obs.error


async def test_redis_password_is_checked(ctx, redis_with_password, redis_url):
    hostport = redis_with_password
    good = await rd(ctx, url=f"redis://:{REDIS_PASSWORD}@{hostport}/0")
    wrong = await rd(ctx, url=f"redis://:{WRONG}@{hostport}/0")
    missing = await rd(ctx, url=f"redis://{hostport}/0")
    # A password for a server that has none: the monitor's definition is wrong, so say so.
    unexpected = await rd(ctx, url=redis_url.replace("redis://", f"redis://:{WRONG}@"))
    assert good.outcome == "up"
    assert missing.phases.keys() == {"connect"}  # NOAUTH comes back to the PING
    for obs in (wrong, missing, unexpected):
        assert (obs.outcome, obs.error_kind) == ("down", "auth"), obs
        assert WRONG not in obs.error


async def test_redis_url_from_the_environment(ctx, redis_with_password, monkeypatch):
    monkeypatch.setenv("VIGIL_TEST_CACHE_URL", f"redis://:{REDIS_PASSWORD}@{redis_with_password}")
    assert (await rd(ctx, url_env="VIGIL_TEST_CACHE_URL")).outcome == "up"
    missing = await rd(ctx, url_env="VIGIL_TEST_NOT_SET")
    assert (missing.outcome, missing.error_kind) == ("error", "config")


def test_redis_spec_format():
    [m] = SCHEMA.parse([{"id": "cache", "kind": "redis", "interval": "30s",
                           "redis": {"url": "rediss://cache.internal:6380/2"}}])
    assert m.redis.model_dump(mode="json") == {"url": "rediss://cache.internal:6380/2"}
    for bad, why in (({"url": f"http://:{WRONG}@h/"}, "redis://"),
                     ({"url": f"redis://:{WRONG}@h/?ssl_keyfile=/etc/key"}, "ssl_keyfile"),
                     ({"url": f"redis://:{WRONG}@h:port/"}, "not a valid"),
                     ({"url": "redis://h", "url_env": "X"}, "exactly one")):
        with pytest.raises(SpecError, match=why) as caught:
            SCHEMA.parse([{"id": "c", "kind": "redis", "interval": "30s", "redis": bad}])
        assert WRONG not in str(caught.value)


# Both, through the real executor: a server that accepts and never answers times out.


async def test_silent_servers_time_out_in_the_real_executor(r, keys, probe_dsn, redis_url):
    settings = Settings(max_timeout_ms=1_000, instance_id="exec-probe")
    async with RawServer(silent()) as blackhole:
        dues = [check_due(mid, kind, spec, timeout_ms=800) for mid, kind, spec in (
            ("pg-silent", "postgres", {"dsn": f"postgresql://u@127.0.0.1:{blackhole.port}/db"}),
            ("redis-silent", "redis", {"url": f"redis://127.0.0.1:{blackhole.port}/0"}),
            ("pg-up", "postgres", {"dsn": probe_dsn}),
            ("redis-up", "redis", {"url": redis_url}),
        )]
        got = await run_checks(r, keys, dues, settings)
    assert {m: (g.outcome, g.error_kind) for m, g in got.items()} == {
        "pg-silent": ("down", "timeout"), "redis-silent": ("down", "timeout"),
        "pg-up": ("up", None), "redis-up": ("up", None)}
    # The silent server held up nothing: both live probes finished before either timed out.
    assert max(got[m].finished_ms for m in ("pg-up", "redis-up")) < min(
        got[m].finished_ms for m in ("pg-silent", "redis-silent"))
