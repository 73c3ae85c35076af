"""Least privilege for the postgres probe, on the session's embedded Postgres. In this test
deployment it is Vigil's own Postgres, allowed by the executor's VIGIL_ALLOW_TARGETS as an
operator allows a server they mean to probe. A superuser, or a member of a role that reads or
writes the server's files or runs programs, is refused before the monitor's query runs unless
the monitor opts in; a plain role's query runs READ ONLY under the check's statement timeout,
and its error text is cut and carries no password."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from engine.events import Observation
from engine.guard import Guard
from engine.keys import Keys
from engine.settings import Settings, Target
from executors.base import Context
from executors.kinds import postgres_probe
from tests.support.kind_executor import observe
from tests.support.pg import login_role, socket_dsn, socket_path

READ_PASSWD = "SELECT CAST(pg_read_file('/etc/passwd') AS int)"
PASSWD_LINE = "root:x:0:0:"


@pytest.fixture
def ctx(r: aioredis.Redis, keys: Keys, postgres_dsn: str) -> Context:
    own = Settings(postgres_dsn=postgres_dsn,
                   allow_targets=(Target(path=socket_path(postgres_dsn)),))
    return Context(r, keys, guard=Guard(own))


async def pg(ctx: Context, timeout_ms: int = 2_000, **spec: Any) -> Observation:
    return await observe(ctx, "postgres", spec, timeout_ms=timeout_ms)


async def test_the_file_is_there_to_be_read(ctx, postgres_dsn):
    """The attack works for a superuser who opts in: the probe's error quotes the file."""
    obs = await pg(ctx, dsn=postgres_dsn, query=READ_PASSWD, allow_privileged=True)
    assert (obs.outcome, obs.error_kind) == ("down", "query")
    assert PASSWD_LINE in (obs.error or "")


async def test_a_superuser_is_refused_before_the_query_runs(ctx, postgres_dsn):
    obs = await pg(ctx, dsn=postgres_dsn, query=READ_PASSWD)
    assert (obs.outcome, obs.error_kind) == ("error", "privileged")
    assert "the probe's role postgres is a superuser" in (obs.error or "")
    assert "allow_privileged: true" in (obs.error or "")
    assert PASSWD_LINE not in (obs.error or "")


@pytest.mark.parametrize("file_role", postgres_probe.FILE_ROLES)
async def test_members_of_file_roles_are_refused(ctx, pool, postgres_dsn, file_role):
    async with (login_role(pool, "vigil_probe_middle", file_role),
                login_role(pool, "vigil_probe_member", "vigil_probe_middle") as member):
        obs = await pg(ctx, dsn=socket_dsn(postgres_dsn, member), query=READ_PASSWD)
    assert (obs.outcome, obs.error_kind) == ("error", "privileged")
    assert f"is a member of {file_role}" in (obs.error or "")
    assert PASSWD_LINE not in (obs.error or "")


async def test_allow_privileged_is_an_explicit_opt_in(ctx, postgres_dsn):
    allowed = await pg(ctx, dsn=postgres_dsn, allow_privileged=True)
    refused = await pg(ctx, dsn=postgres_dsn, allow_privileged=False)
    assert allowed.outcome == "up"
    assert (refused.outcome, refused.error_kind) == ("error", "privileged")


async def test_a_plain_role_cannot_read_the_file(ctx, pool, postgres_dsn):
    async with login_role(pool, "vigil_probe_plain_reader") as role:
        obs = await pg(ctx, dsn=socket_dsn(postgres_dsn, role), query=READ_PASSWD)
    assert (obs.outcome, obs.error_kind) == ("down", "query")
    assert "permission denied for function pg_read_file" in (obs.error or "")
    assert PASSWD_LINE not in (obs.error or "")


async def test_the_server_stops_a_query_at_the_checks_budget(ctx, pool, postgres_dsn):
    """observe() sets no timeout of its own: what ends the sleep is statement_timeout."""
    async with login_role(pool, "vigil_probe_sleeper") as role:
        obs = await pg(ctx, timeout_ms=500, dsn=socket_dsn(postgres_dsn, role),
                       query="SELECT pg_sleep(30)")
        running = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'")
    assert (obs.outcome, obs.error_kind) == ("down", "query")
    assert "canceling statement due to statement timeout" in (obs.error or "")
    assert running == 0


async def test_a_query_error_is_cut(ctx, pool, postgres_dsn):
    async with login_role(pool, "vigil_probe_long_error") as role:
        obs = await pg(ctx, dsn=socket_dsn(postgres_dsn, role),
                       query="SELECT CAST(repeat('x', 5000) AS int)")
    assert (obs.outcome, obs.error_kind) == ("down", "query")
    assert len(obs.error or "") == postgres_probe.QUERY_ERROR_MAX
