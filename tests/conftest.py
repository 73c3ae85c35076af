"""Real servers for the whole test session (a redis-server child, embedded Postgres, chDB) and
the fixtures built on them."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from api import tokens
from engine.clickhouse import ClickHouse
from engine.connections import postgres_pool, redis_client
from engine.keys import Keys
from engine.migrate import migrate
from engine.secrets import generate_key
from executors.base import Context
from tests.support.servers import api_client, http_target, redis_server
from vigil.embedded import EmbeddedPostgres

# Every role in a test reads the key as in production (engine.secrets.Keyring.from_env), and
# the processes the end-to-end tests start inherit it; tests of other keys set their own.
os.environ.setdefault("VIGIL_SECRET_KEY", generate_key())


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
    await pool.execute("TRUNCATE monitors, monitor_status, status_history")
    await ch.command("TRUNCATE TABLE check_results")


@pytest.fixture
def keys() -> Keys:
    return Keys("0")


@pytest.fixture
def ctx(r: aioredis.Redis, keys: Keys) -> Context:
    """An executor context on the test Redis, for running one kind's check directly."""
    return Context(r, keys)


@pytest.fixture(scope="session")
async def target() -> AsyncIterator[str]:
    """A local HTTP target: /ok answers 200, /fail 500, /slow after 3 s."""
    async with http_target() as url:
        yield url


@pytest.fixture
async def client(r: aioredis.Redis, pool: asyncpg.Pool, ch: ClickHouse,
                 clean: None) -> AsyncIterator[TestClient]:
    """The API app on the test servers, on empty tables, behind aiohttp's test client."""
    async with api_client(r, pool, ch) as c:
        yield c


@pytest.fixture
async def api(r: aioredis.Redis, pool: asyncpg.Pool, ch: ClickHouse,
              clean: None) -> AsyncIterator[TestClient]:
    """As `client`, every request carrying a token that may write monitors (the scope the
    monitors routes need; admin adds nothing there)."""
    await pool.execute("TRUNCATE api_tokens")
    token = await tokens.create(pool, "test-writer", "write")
    async with api_client(r, pool, ch, token=token) as c:
        yield c
