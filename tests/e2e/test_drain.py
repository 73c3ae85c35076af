"""SIGTERM with Redis unreachable: a real `vigil executor` drains within its bound, leaves
what it could not acknowledge pending (nothing is lost), and exits 0; the scheduler and both
sinks, retrying the vanished Redis, exit 0 too."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from engine.keys import EXECUTOR_GROUP, RESULT_GROUPS, Keys
from engine.streams import EVENT_FIELD, ensure_group
from tests.support.helpers import exit_code_on_sigterm, free_port, reaped, vigil_env, wait_for
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
        with reaped(proc):
            await asyncio.wait_for(started.wait(), timeout=30)
            await asyncio.to_thread(server.stop)  # Redis goes away with the check in flight
            code = await exit_code_on_sigterm(proc)
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


@pytest.mark.parametrize("role", [["scheduler"], ["sink", "status"], ["sink", "clickhouse"]],
                         ids=["scheduler", "sink-status", "sink-clickhouse"])
async def test_every_role_stops_with_redis_gone(tmp_path, postgres_dsn, pool, role):
    """The scheduler and both sinks, retrying a vanished Redis when SIGTERM comes, exit 0
    (a retry loop that ignored the stop would have compose SIGKILL them)."""
    server = RedisServer(tmp_path / "redis", port=free_port())
    url = await asyncio.to_thread(server.start)
    log_path = tmp_path / "role.log"
    with log_path.open("wb") as log:
        proc = await asyncio.to_thread(
            subprocess.Popen, [sys.executable, "-m", "vigil.cli", *role],
            env=vigil_env(VIGIL_REDIS_URL=url, VIGIL_POSTGRES_DSN=postgres_dsn,
                          VIGIL_CLICKHOUSE_URL=f"chdb://{tmp_path / 'chdb'}",
                          VIGIL_LOG_FORMAT="json", VIGIL_INSTANCE_ID="drain-role"),
            stdout=log, stderr=log)

    def logged(*texts: str):
        async def seen() -> bool:
            return any(text in log_path.read_text() for text in texts)
        return seen

    try:
        with reaped(proc):
            await wait_for(logged(" started"), timeout=60)
            await asyncio.to_thread(server.stop)
            await wait_for(logged("retrying until it works", "waits for a server"), timeout=30)
            code = await exit_code_on_sigterm(proc)
    finally:
        await asyncio.to_thread(server.stop)
    assert code == 0, log_path.read_text()[-2000:]
