"""Real servers for the whole test session: a redis-server child, embedded Postgres, chDB."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis
import redis.asyncio as aioredis
from aiohttp import web
from engine.clickhouse import ClickHouse

from engine import store
from engine.connections import postgres_pool, redis_client
from engine.keys import Keys
from engine.migrate import migrate
from engine.monitors import MonitorBase
from executors.base import Context
from vigil.embedded import EmbeddedPostgres, redis_server_binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server(workdir: Path, password: str | None = None) -> Iterator[int]:
    """A redis-server child on a free port (with requirepass when a password is given)."""
    port = free_port()
    auth = ["--requirepass", password] if password else []
    proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(workdir), *auth],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, password=password)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    client.close()
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """An aiohttp app on a free 127.0.0.1 port; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as port:
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    # Not under pytest's temp folder: another pytest run as this user resets that folder to
    # 0700, and the server runs as its own OS user, which could then not read its data.
    workdir = Path(tempfile.mkdtemp(prefix="vigil-test-pg-"))
    server = EmbeddedPostgres(workdir)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def clickhouse_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"chdb://{tmp_path_factory.mktemp('chdb') / 'data'}"


@pytest.fixture(scope="session")
async def ch(clickhouse_url: str, postgres_dsn: str) -> AsyncIterator[ClickHouse]:
    client = ClickHouse.from_url(clickhouse_url)
    await migrate(postgres_dsn, client)
    yield client
    await client.close()


@pytest.fixture(scope="session")
async def pool(postgres_dsn: str, ch: ClickHouse) -> AsyncIterator[asyncpg.Pool]:
    p = await postgres_pool(postgres_dsn)
    yield p
    await p.close()


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = redis_client(redis_url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
async def clean(pool: asyncpg.Pool, ch: ClickHouse) -> None:
    await pool.execute("TRUNCATE monitors, monitor_status")
    await ch.command("TRUNCATE TABLE check_results")


@pytest.fixture
def keys() -> Keys:
    return Keys("0")


@pytest.fixture
def ctx(r: aioredis.Redis, keys: Keys) -> Context:
    """An executor context on the test Redis, for running one kind's check directly."""
    return Context(r, keys)


async def store_monitors(pool: asyncpg.Pool, monitors: list[MonitorBase], source: str) -> None:
    """Store monitors as `apply` (source "file") or the API (source "api") would."""
    async with pool.acquire() as conn, conn.transaction():
        for monitor in monitors:
            await store.upsert(conn, monitor, source)


async def wait_for(predicate: object, timeout: float = 10.0, every: float = 0.05) -> None:
    """Poll an async predicate until true; fail with the timeout otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(every)


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def vigil_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update(extra)
    return env


@pytest.fixture(scope="session")
async def target() -> AsyncIterator[str]:
    """A local HTTP target: /ok answers 200, /fail 500, /slow after 3 s."""

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def fail(_: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/fail", fail)
    app.router.add_get("/slow", slow)
    async with serve_app(app) as url:
        yield url
