"""Redis and Postgres as production runs them: Redis over TLS with the server's certificate
checked against a CA (`rediss://...?ssl_ca_certs=`) as an ACL user limited to Vigil's keys
with no admin or dangerous command; Postgres over TLS (`sslmode=verify-full&sslrootcert=`)
as a role that is no superuser, for Vigil itself and for the postgres probe. Servers made by
the test (tests/support/tls.py); `vigil up` runs every role on them."""

from __future__ import annotations

import asyncpg
import pytest
import redis

from tests.support.helpers import free_port
from tests.support.kind_executor import observe
from tests.support.tls import VIGIL_PASSWORD, certificates, tls_postgres, tls_redis
from tests.support.up import closed_port_recorded, interrupt, vigil_up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_the_vigil_redis_user_cannot_run_admin_commands(tmp_path):
    with certificates() as (ca, ca_path), tls_redis(tmp_path / "redis", ca, ca_path) as url:
        client = redis.Redis.from_url(url)
        try:
            assert client.set("vigil:{0}:probe", b"1")
            for denied in (["FLUSHALL"], ["CONFIG", "GET", "dir"], ["SET", "other", "1"]):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    client.execute_command(*denied)
        finally:
            client.close()


def test_redis_refuses_a_client_without_tls(tmp_path):
    with certificates() as (ca, ca_path), tls_redis(tmp_path / "redis", ca, ca_path) as url:
        plain = redis.Redis.from_url(url.replace("rediss://", "redis://").split("?")[0],
                                     socket_timeout=5)
        try:
            with pytest.raises(redis.exceptions.ConnectionError):
                plain.ping()
        finally:
            plain.close()


async def test_postgres_takes_the_vigil_role_over_tls_only():
    with certificates() as (ca, _), tls_postgres(ca) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = 'vigil'")
        finally:
            await conn.close()
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
            await asyncpg.connect(dsn.split("?")[0] + "?sslmode=disable")
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(dsn.replace(VIGIL_PASSWORD, "wrong"))


async def test_the_postgres_probe_checks_a_server_over_tls(ctx):
    """The probe connects through the guard (engine.guard.GuardedLoop: the checked address
    for the socket, the name for the certificate): verify-full against the test's CA is up;
    a CA that did not sign the server's certificate is the tls kind's `tls_untrusted` (it read
    "Operation not permitted": an SSLError is an OSError with errno 1)."""
    with certificates() as (ca, _), tls_postgres(ca) as dsn:
        spec = {"dsn": dsn, "query": "SELECT 1"}
        assert (await observe(ctx, "postgres", spec, 5_000)).outcome == "up"
        with certificates() as (_, other_ca):
            wrong = dsn.rpartition("sslrootcert=")[0] + f"sslrootcert={other_ca}"
            failed = await observe(ctx, "postgres", {**spec, "dsn": wrong}, 5_000)
        assert (failed.outcome, failed.error_kind) == ("down", "tls_untrusted")
        assert "certificate" in (failed.error or "")


async def test_vigil_up_runs_on_tls_redis_and_tls_postgres(home, tmp_path):
    """Every role of `vigil up` (migrations included) through Redis over TLS as the ACL user
    and Postgres over TLS (verify-full) as a role that only owns its database."""
    with (certificates() as (ca, ca_path), tls_redis(tmp_path / "redis", ca, ca_path) as url,
          tls_postgres(ca) as dsn):
        port = free_port()
        async with vigil_up(home, port, "--redis-url", url, "--postgres-dsn", dsn) as proc:
            await closed_port_recorded(port)
            await interrupt(proc)
