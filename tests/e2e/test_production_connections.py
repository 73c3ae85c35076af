"""Redis and Postgres as production runs them: Redis over TLS with the server's certificate
checked against a CA (`rediss://...?ssl_ca_certs=`) as an ACL user limited to Vigil's keys
with no admin or dangerous command; Postgres as a role that is no superuser. Servers made by
the test (tests/support/tls.py); `vigil up` runs every role on them."""

from __future__ import annotations

import asyncpg
import pytest
import redis

from tests.support.helpers import free_port
from tests.support.tls import VIGIL_PASSWORD, certificates, tls_redis, vigil_role_postgres
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


async def test_the_vigil_postgres_role_is_no_superuser_and_needs_its_password():
    with vigil_role_postgres() as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = 'vigil'")
        finally:
            await conn.close()
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(dsn.replace(VIGIL_PASSWORD, "wrong"))


async def test_vigil_up_runs_on_tls_redis_and_a_plain_postgres_role(home, tmp_path):
    """Every role of `vigil up` (migrations included) through Redis over TLS as the ACL user
    and Postgres as a role that only owns its database."""
    with (certificates() as (ca, ca_path), tls_redis(tmp_path / "redis", ca, ca_path) as url,
          vigil_role_postgres() as dsn):
        port = free_port()
        async with vigil_up(home, port, "--redis-url", url, "--postgres-dsn", dsn) as proc:
            await closed_port_recorded(port)
            await interrupt(proc)
