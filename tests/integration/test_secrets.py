"""Secrets are write-only and sealed (issue 9.6), through the real API, the embedded Postgres,
the real scheduler and executor on a real redis-server, and a redis-server whose password
(requirepass) the probe must send."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from api import tokens
from engine import store
from engine.events import CheckResult
from engine.keys import EXECUTOR_GROUP
from engine.secrets import PREFIX, REDACTED, Keyring, generate_key
from engine.settings import Settings
from engine.streams import ensure_group, event_of
from executors.kinds import SCHEMA
from executors.service import Executor
from scheduler.service import Scheduler
from tests.support.helpers import running, store_monitors, wait_for
from tests.support.kind_executor import check_due, run_checks
from tests.support.servers import api_client, create_monitors, redis_server
from vigil import admin

REDIS_PASSWORD = "pw-5ecret-redis"
DSN_PASSWORD = "pw-5ecret-dsn"
PLAIN = (REDIS_PASSWORD, DSN_PASSWORD)
SETTINGS = Settings(instance_id="exec-secrets")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server that answers only to the password: its host:port."""
    with redis_server(tmp_path_factory.mktemp("redis-secrets"), REDIS_PASSWORD) as port:
        yield f"127.0.0.1:{port}"


def monitors(hostport: str) -> list[dict]:
    # Long enough that a check on a loaded machine still runs before its deadline.
    every = {"interval": "5s", "timeout": "2s"}
    return [
        {"id": "cache", "kind": "redis", **every,
         "redis": {"url": f"redis://:{REDIS_PASSWORD}@{hostport}/0"}},
        {"id": "db", "kind": "postgres", **every,
         "postgres": {"dsn": f"postgresql://probe:{DSN_PASSWORD}@127.0.0.1:9/db"}},
    ]


async def stored_specs(pool) -> dict[str, str]:
    return {r["id"]: r["spec"] for r in await pool.fetch("SELECT id, spec::text FROM monitors")}


async def test_the_api_returns_secrets_redacted_and_postgres_holds_them_sealed(api, pool,
                                                                               guarded):
    await create_monitors(api, monitors(guarded), PLAIN)
    listed = await (await api.get("/api/v1/monitors")).text()
    assert not any(p in listed for p in PLAIN)
    cache = await (await api.get("/api/v1/monitors/cache")).json()
    db = await (await api.get("/api/v1/monitors/db")).json()
    assert (cache["redis"]["url"], db["postgres"]["dsn"]) == (REDACTED, REDACTED)
    specs = await stored_specs(pool)
    assert not any(p in text for text in specs.values() for p in PLAIN)
    assert all(PREFIX in text for text in specs.values())


@pytest.mark.timeout(30)
async def test_check_events_carry_no_secret_and_the_executor_authenticates(
        r, keys, pool, clean, guarded, postgres_dsn):
    await store_monitors(pool, SCHEMA.parse(monitors(guarded)[:1]), source="api")
    stream = keys.checks("default")
    await ensure_group(r, stream, EXECUTOR_GROUP)
    scheduler = Scheduler(r, pool, keys, reconcile_s=3600, postgres_dsn=postgres_dsn,
                          claim_idle_ms=35_000)

    async def checked() -> bool:
        return await r.xlen(keys.results) > 0

    async with running(scheduler), running(Executor(r, keys, SETTINGS)):
        await wait_for(checked, timeout=20)
    raw = b"".join(event_of(f) for _, f in await r.xrange(stream))
    assert b'"monitor_id":"cache"' in raw
    assert REDIS_PASSWORD.encode() not in raw
    assert PREFIX.encode() in raw
    outcomes = {(res.outcome, res.error_kind) for res in (
        CheckResult.from_json(event_of(f)) for _, f in await r.xrange(keys.results))}
    assert outcomes == {("up", None)}


async def test_a_put_or_patch_with_the_marker_keeps_the_secret(api, pool, guarded):
    cache, db = monitors(guarded)
    assert (await api.post("/api/v1/monitors", json=cache)).status == 201
    sealed = await stored_specs(pool)
    shown = await (await api.get("/api/v1/monitors/cache")).json()
    definition = {k: shown[k] for k in ("id", "kind", "interval_ms", "timeout_ms", "redis")}
    resp = await api.put("/api/v1/monitors/cache", json={**definition, "name": "renamed"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["version"] == 2
    assert await stored_specs(pool) == sealed  # the same sealed text: nothing re-sealed
    resp = await api.patch("/api/v1/monitors/cache", json={"tags": ["x"]})
    assert resp.status == 200
    assert await stored_specs(pool) == sealed
    new_url = f"redis://:other@{guarded}/1"
    resp = await api.patch("/api/v1/monitors/cache", json={"redis": {"url": new_url}})
    assert resp.status == 200
    spec = orjson.loads((await stored_specs(pool))["cache"])
    assert Keyring.from_env().open("url", spec["url"]) == new_url
    # A marker with nothing stored to keep is the client's mistake, named.
    resp = await api.post("/api/v1/monitors", json={**db, "postgres": {"dsn": REDACTED}})
    assert resp.status == 422
    [error] = (await resp.json())["errors"]
    assert error["field"] == "postgres.dsn"


async def test_without_a_key_the_api_refuses_a_secret_naming_the_variable(
        r, pool, ch, clean, monkeypatch, guarded):
    monkeypatch.delenv("VIGIL_SECRET_KEY")
    await pool.execute("TRUNCATE api_tokens")
    token = await tokens.create(pool, "nokey", "write")
    _, db = monitors(guarded)
    async with api_client(r, pool, ch, token=token) as client:
        resp = await client.post("/api/v1/monitors", json=db)
        assert resp.status == 422
        [error] = (await resp.json())["errors"]
        assert error["field"] == "postgres.dsn"
        assert "VIGIL_SECRET_KEY" in error["message"]
        from_env = {**db, "postgres": {"dsn_env": "PROBE_DSN"}}
        assert (await client.post("/api/v1/monitors", json=from_env)).status == 201
    assert await pool.fetchval("SELECT count(*) FROM monitors") == 1


async def test_vigil_monitors_show_redacts_too(pool, clean, guarded, capsys):
    await store_monitors(pool, SCHEMA.parse(monitors(guarded)), source="file")
    for monitor_id in ("cache", "db"):
        await admin.show(pool, monitor_id)
    shown = capsys.readouterr().out
    assert shown.count(REDACTED) == 2
    assert not any(p in shown for p in PLAIN)


async def test_apply_reseals_only_a_changed_secret(pool, clean, guarded):
    cache = monitors(guarded)[0]
    keyring = Keyring.from_env()
    await store.apply(pool, SCHEMA.parse([cache]), prune=False, dry_run=False, keyring=keyring)
    first = await pool.fetchrow("SELECT spec::text, version FROM monitors")
    again = await store.apply(pool, SCHEMA.parse([cache]), prune=False, dry_run=False,
                              keyring=keyring)
    assert (again.unchanged, await pool.fetchrow("SELECT spec::text, version FROM monitors")) \
        == (1, first)
    changed = {**cache, "redis": {"url": f"redis://:other@{guarded}/0"}}
    plan = await store.apply(pool, SCHEMA.parse([changed]), prune=False, dry_run=False,
                             keyring=keyring)
    assert plan.lines() == ["~ update cache (redis)"]


async def test_rotate_then_drop_the_old_key(r, keys, pool, clean, guarded, monkeypatch):
    old, new = generate_key(), generate_key()
    monkeypatch.setenv("VIGIL_SECRET_KEY", old)
    cache, db = monitors(guarded)
    await store_monitors(pool, SCHEMA.parse([cache, db]), source="api")
    # A DSN written before secrets were sealed: rotating seals it for the first time.
    await pool.execute("UPDATE monitors SET spec = jsonb_build_object('dsn', $1::text) "
                       "WHERE id = 'db'", db["postgres"]["dsn"])
    monkeypatch.setenv("VIGIL_SECRET_KEY", f"{new},{old}")
    await admin.secrets_rotate(pool)
    monkeypatch.setenv("VIGIL_SECRET_KEY", new)
    assert not any(p in text for text in (await stored_specs(pool)).values() for p in PLAIN)
    row = await pool.fetchrow("SELECT spec::text AS spec, version FROM monitors "
                              "WHERE id = 'cache'")
    assert row["version"] == 2  # a new version: the schedulers compile the new text
    due = check_due("cache", "redis", orjson.loads(row["spec"]), spec_version=row["version"])
    got = await run_checks(r, keys, [due], SETTINGS)
    assert (got["cache"].outcome, got["cache"].error_kind) == ("up", None)


async def test_a_definition_cannot_carry_sealed_text(api, pool, guarded):
    """Else a writer who got hold of a sealed value (a backup, a Redis dump) could have an
    executor open it into a field that is sent to their own server."""
    await store_monitors(pool, SCHEMA.parse(monitors(guarded)[:1]), source="api")
    sealed = orjson.loads((await stored_specs(pool))["cache"])["url"]
    resp = await api.post("/api/v1/monitors", json={
        "id": "leak", "kind": "postgres",
        "postgres": {"dsn": "postgresql://x@127.0.0.1:9/db", "query": sealed}})
    assert resp.status == 422
    [error] = (await resp.json())["errors"]
    assert error["field"] == "postgres.query"


@pytest.mark.parametrize("key", [generate_key(), None], ids=["wrong key", "no key"])
async def test_a_secret_the_executor_cannot_open_is_an_error(r, keys, pool, clean, guarded,
                                                            monkeypatch, key):
    await store_monitors(pool, SCHEMA.parse(monitors(guarded)[:1]), source="api")
    spec = orjson.loads(await pool.fetchval("SELECT spec::text FROM monitors"))
    if key is None:
        monkeypatch.delenv("VIGIL_SECRET_KEY")
    else:
        monkeypatch.setenv("VIGIL_SECRET_KEY", key)
    got = await run_checks(r, keys, [check_due("cache", "redis", spec)], SETTINGS)
    result = got["cache"]
    assert (result.outcome, result.error_kind) == ("error", "secret")
    assert "redis.url" in (result.error or "")
    assert "VIGIL_SECRET_KEY" in (result.error or "")
