"""Real servers a test starts: a redis-server (the one vigil.embedded starts), an aiohttp app,
the HTTP target checks run against, a target that holds requests until the test lets them
through, and the API app behind aiohttp's test client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import make_app
from engine.clickhouse import ClickHouse
from engine.keys import Keys
from engine.shards import Layout
from executors.kinds import SCHEMA
from tests.support.helpers import free_port
from vigil.embedded import RedisServer


@contextlib.contextmanager
def redis_server(workdir: Path, password: str | None = None) -> Iterator[int]:
    """A redis-server child on a free 127.0.0.1 port, no persistence (with requirepass when a
    password is given); yields the port."""
    server = RedisServer(workdir, port=free_port(), password=password)
    server.start()
    try:
        yield server.port  # type: ignore[misc]
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def serve_app(app: web.Application, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """An aiohttp app on a free port of `host` (a loopback address: 127.0.0.2 is another
    host to the executor); yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, host, port).start()
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


class Gate:
    """An HTTP target that holds every request until the test lets one through, and counts
    how many it held at once (each on its own connection: a client sends one request at a
    time on a connection) and the paths it was asked for, in order."""

    def __init__(self) -> None:
        self.passes = asyncio.Semaphore(0)
        self.holding = 0
        self.most = 0
        self.answered = 0
        self.seen: list[str] = []

    def let_through(self, count: int) -> None:
        """`count` more requests may be answered, held ones first."""
        for _ in range(count):
            self.passes.release()

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(request.path)
        self.holding += 1
        self.most = max(self.most, self.holding)
        try:
            await self.passes.acquire()
        finally:
            self.holding -= 1
        self.answered += 1
        return web.Response(text="ok")

    def app(self) -> web.Application:
        """The gate on every path."""
        app = web.Application()
        app.router.add_get("/{path:.*}", self.handle)
        return app


@contextlib.asynccontextmanager
async def http_target() -> AsyncIterator[str]:
    """A well-behaved HTTP target: /ok answers 200, /fail 500, /slow after 3 s; yields its
    base URL."""

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def fail(_: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(3)  # the target's behaviour: an answer that comes late
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/fail", fail)
    app.router.add_get("/slow", slow)
    async with serve_app(app) as url:
        yield url


@contextlib.asynccontextmanager
async def api_client(r: aioredis.Redis, pool: asyncpg.Pool, ch: ClickHouse,
                     keys: Keys | Layout | None = None, token: str | None = None,
                     ) -> AsyncIterator[TestClient]:
    """The API app as the composition builds it (every kind's schema), behind aiohttp's test
    client; with `token`, every request carries it as a bearer token."""
    app = make_app(r, pool, ch, keys or Keys(), SCHEMA)
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with TestClient(TestServer(app), headers=headers) as client:
        yield client


async def create_monitors(api: TestClient, bodies: list[dict[str, Any]],
                          hidden: tuple[str, ...] = ()) -> None:
    """POST each definition to the monitors API: each is created, and no text of `hidden`
    (the secrets it holds) comes back in the answer."""
    for body in bodies:
        resp = await api.post("/api/v1/monitors", json=body)
        text = await resp.text()
        assert resp.status == 201, text
        assert not any(p in text for p in hidden)
