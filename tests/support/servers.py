"""Real servers a test starts: a redis-server (the one vigil.embedded starts), an aiohttp app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from aiohttp import web

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
