"""API tokens (issue 9 item 5), through real requests to the app on the embedded Postgres:
scopes, expiry, revocation in every API process, failed authentications logged and limited
per client address, push heartbeats limited per push token, and the `vigil tokens` commands."""

from __future__ import annotations

import datetime

import asyncpg
import pytest
from structlog.testing import capture_logs

from api import auth, push, tokens
from engine.migrate import load
from executors.kinds import SCHEMA
from tests.support.helpers import store_monitors
from tests.support.servers import api_client
from vigil import cli

WEB = {"id": "web", "kind": "http", "interval": "10s", "http": {"url": "http://127.0.0.1:9/"}}
# Every change the monitors API makes, in an order that works on one monitor.
WRITES = (("post", "/api/v1/monitors", WEB, 201),
          ("patch", "/api/v1/monitors/web", {"name": "shop"}, 200),
          ("put", "/api/v1/monitors/web", WEB, 200),
          ("post", "/api/v1/monitors/web/pause", None, 200),
          ("post", "/api/v1/monitors/web/resume", None, 200),
          ("delete", "/api/v1/monitors/web", None, 204))
READS = ("/api/v1/monitors", "/api/v1/monitors/web", "/api/v1/monitors/web/status")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def no_tokens(pool, clean) -> None:
    await pool.execute("TRUNCATE api_tokens")


async def test_read_reads_write_and_admin_change(client, pool, no_tokens):
    read, write, admin = [await tokens.create(pool, scope, scope) for scope in tokens.SCOPES]
    for method, path, body, _ in WRITES:
        resp = await client.request(method, path, json=body, headers=bearer(read))
        assert resp.status == 403, (method, path)
        assert await resp.json() == {"error": "insufficient_scope", "needed_scope": "write",
                                     "token_scope": "read"}
        assert resp.headers["WWW-Authenticate"] == (
            'Bearer realm="vigil", error="insufficient_scope", scope="write"')
    assert await pool.fetchval("SELECT count(*) FROM monitors") == 0
    for token in (write, admin):
        for method, path, body, status in WRITES:
            if path == "/api/v1/monitors/web/resume":  # read while it exists
                for read_path in READS:
                    for reader in (read, token):
                        resp = await client.get(read_path, headers=bearer(reader))
                        assert resp.status == 200, read_path
            resp = await client.request(method, path, json=body, headers=bearer(token))
            assert resp.status == status, (method, path, await resp.text())


async def test_an_expired_token_is_refused(client, pool, no_tokens):
    token = await tokens.create(pool, "ci", "read", tokens.expiry_ms("30d"))
    assert await pool.fetchval("SELECT expires_at - created_at FROM api_tokens") == (
        datetime.timedelta(days=30))
    assert (await client.get("/api/v1/monitors", headers=bearer(token))).status == 200
    # Thirty days on.
    await pool.execute("UPDATE api_tokens SET expires_at = now() - interval '1 second'")
    resp = await client.get("/api/v1/monitors", headers=bearer(token))
    assert (resp.status, await resp.json()) == (401, {"error": "token expired"})
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="vigil", error="invalid_token"'


@pytest.mark.parametrize("text", ["0s", "3651d", "soon", "1e308"])
def test_an_expiry_has_bounds(text):
    with pytest.raises(ValueError, match=r"3650d|not a duration"):
        tokens.expiry_ms(text)


async def test_a_revoked_token_fails_at_once_in_every_api_process(r, pool, ch, no_tokens):
    token = await tokens.create(pool, "ci", "read")
    async with api_client(r, pool, ch, token=token) as one, \
            api_client(r, pool, ch, token=token) as two:
        for api in (one, two):
            assert (await api.get("/api/v1/monitors")).status == 200
        await tokens.revoke(pool, "ci")
        for api in (one, two):
            resp = await api.get("/api/v1/monitors")
            assert (resp.status, await resp.json()) == (401, {"error": "unknown or revoked token"})
            assert resp.headers["WWW-Authenticate"].startswith("Bearer ")


async def test_failed_authentications_are_logged_and_limited_per_address(client, pool,
                                                                          no_tokens):
    good = await tokens.create(pool, "ci", "read")
    wrong = "vigil_" + "x" * 43
    with capture_logs() as logs:
        # Neither successes nor requests without a token count.
        for headers in [bearer(good), {}] * (2 * auth.FAILURE_BURST):
            assert (await client.get("/api/v1/monitors", headers=headers)).status in (200, 401)
        assert logs == []
        for _ in range(auth.FAILURE_BURST):
            resp = await client.get("/api/v1/monitors", headers=bearer(wrong))
            assert resp.status == 401
        limited = await client.get("/api/v1/monitors", headers=bearer(good))
        again = await client.get("/api/v1/monitors", headers=bearer(wrong))
    for resp in (limited, again):
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json())["error"].startswith("too many failed authentications")
    assert [(e["event"], e["log_level"], e["client"], e["reason"]) for e in logs] == [
        ("authentication failed", "warning", "127.0.0.1", "unknown or revoked token")
    ] * auth.FAILURE_BURST
    assert wrong not in str(logs)
    # Without a token there is nothing to guess: the answer is still the plain 401.
    assert (await client.get("/api/v1/monitors")).status == 401


async def push_token(pool, monitor_id: str) -> str:
    value: str = await pool.fetchval("SELECT push_token FROM monitors WHERE id = $1",
                                     monitor_id)
    return value


async def test_push_heartbeats_are_limited_per_push_token(client, pool, clean):
    await store_monitors(pool, SCHEMA.parse([{"id": "a", "kind": "push", "interval": "1h"},
                                             {"id": "b", "kind": "push", "interval": "1h"}]),
                         source="api")
    a, b = await push_token(pool, "a"), await push_token(pool, "b")
    for _ in range(push.PUSH_BURST):
        assert (await client.get(f"/api/v1/push/{a}")).status == 200
    resp = await client.post(f"/api/v1/push/{a}", json={"status": "down"})
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) >= 1
    assert (await resp.json())["error"].startswith("too many heartbeats")
    assert (await client.get(f"/api/v1/push/{b}")).status == 200


async def test_guessed_push_tokens_are_failed_authentications(client, pool, clean):
    await store_monitors(pool, SCHEMA.parse([{"id": "a", "kind": "push", "interval": "1h"}]),
                         source="api")
    real = await push_token(pool, "a")
    guesses = [f"{i:032d}" for i in range(auth.FAILURE_BURST)]
    with capture_logs() as logs:
        for guess in guesses:
            assert (await client.get(f"/api/v1/push/{guess}")).status == 404
        resp = await client.get(f"/api/v1/push/{real}")
    assert resp.status == 429
    assert [(e["client"], e["route"]) for e in logs] == [
        ("127.0.0.1", "/api/v1/push/{token}")] * auth.FAILURE_BURST
    assert not any(guess in str(logs) for guess in guesses)


async def test_tokens_made_before_scopes_become_admin(pool, postgres_dsn):
    await pool.execute("DROP DATABASE IF EXISTS vigil_scopes_upgrade")
    await pool.execute("CREATE DATABASE vigil_scopes_upgrade")
    conn = await asyncpg.connect(postgres_dsn, database="vigil_scopes_upgrade")
    try:
        migrations = {m.version: m for m in load("postgres")}
        for version in sorted(v for v in migrations if v < 7):
            await conn.execute(migrations[version].sql)
        await conn.execute("INSERT INTO api_tokens (name, token_sha256) VALUES ('old', 'x')")
        await conn.execute(migrations[7].sql)
        row = await conn.fetchrow("SELECT scope, expires_at FROM api_tokens")
        assert (row["scope"], row["expires_at"]) == ("admin", None)
        with pytest.raises(asyncpg.NotNullViolationError):  # a new one names its scope
            await conn.execute("INSERT INTO api_tokens (name, token_sha256) VALUES ('n', 'y')")
    finally:
        await conn.close()
        await pool.execute("DROP DATABASE vigil_scopes_upgrade")


async def test_vigil_tokens_create_with_scope_and_expiry(client, pool, postgres_dsn, no_tokens,
                                                          capsys):
    async def vigil(*argv: str) -> str:
        args = cli.parser().parse_args([*argv, "--postgres-dsn", postgres_dsn])
        await cli.cmd_admin(cli.settings_from(args), args)
        return capsys.readouterr().out

    token = (await vigil("tokens", "create", "deploy", "--scope", "write",
                         "--expires", "30d")).splitlines()[0]
    row = await pool.fetchrow("SELECT scope, expires_at - created_at AS life FROM api_tokens")
    assert (row["scope"], row["life"]) == ("write", datetime.timedelta(days=30))
    assert (await client.post("/api/v1/monitors", json=WEB, headers=bearer(token))).status == 201
    # The spelling of earlier versions still works, and a token reads unless told otherwise.
    reader = (await vigil("tokens", "create", "--name", "ci")).splitlines()[0]
    resp = await client.delete("/api/v1/monitors/web", headers=bearer(reader))
    assert resp.status == 403
    listed = await vigil("tokens", "list")
    assert "deploy" in listed
    assert "write" in listed
    await vigil("tokens", "revoke", "deploy")
    assert "revoked" in await vigil("tokens", "list")
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["tokens", "create", "x", "--expires", "forever"])
