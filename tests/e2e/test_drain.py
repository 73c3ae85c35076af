"""SIGTERM with Redis unreachable: a real `vigil executor` drains within its bound, leaves
what it could not acknowledge pending (nothing is lost), and exits 0."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from engine.keys import EXECUTOR_GROUP, RESULT_GROUPS, Keys
from engine.streams import EVENT_FIELD, ensure_group
from tests.support.helpers import free_port, vigil_env, wait_for
from tests.support.kind_executor import check_due
from tests.support.servers import serve_app
from vigil.embedded import RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def test_sigterm_with_redis_gone_exits_0_and_leaves_the_check_pending(tmp_path):
    started = asyncio.Event()

    async def slow(_: web.Request) -> web.Response:
        started.set()
        await asyncio.sleep(1.0)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/slow", slow)
    server = RedisServer(tmp_path / "redis", port=free_port(), aof=True)
    url = await asyncio.to_thread(server.start)
    keys = Keys()
    r = aioredis.Redis.from_url(url)
    async with serve_app(app) as base:
        stream = keys.checks("default")
        await ensure_group(r, stream, EXECUTOR_GROUP)
        for group in RESULT_GROUPS:
            await ensure_group(r, keys.results, group)
        due = check_due("slow", "http", {"url": f"{base}/slow"}, timeout_ms=5_000)
        await r.xadd(stream, {EVENT_FIELD: due.to_json()})
        await r.aclose()
        with (tmp_path / "executor.log").open("wb") as log:
            proc = await asyncio.to_thread(
                subprocess.Popen, [sys.executable, "-m", "vigil.cli", "executor"],
                env=vigil_env(VIGIL_REDIS_URL=url, VIGIL_DRAIN_S="3",
                              VIGIL_INSTANCE_ID="exec-drain"), stdout=log, stderr=log)
        try:
            await asyncio.wait_for(started.wait(), timeout=30)
            await asyncio.to_thread(server.stop)  # Redis goes away with the check in flight
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 0, (tmp_path / "executor.log").read_text()[-2000:]
    # Back from its AOF, Redis still holds the check as pending: it runs again later.
    url = await asyncio.to_thread(server.start)
    r = aioredis.Redis.from_url(url)
    try:
        async def still_pending() -> bool:
            return (await r.xpending(stream, EXECUTOR_GROUP))["pending"] == 1

        await wait_for(still_pending)
        assert await r.xlen(keys.results) == 0
    finally:
        await r.aclose()
        await asyncio.to_thread(server.stop)
