"""`vigil up`: the embedded default starts, records results and stops with no child left."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import aiohttp
import psutil
import pytest

from tests.support.helpers import free_port, vigil_env, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@contextlib.asynccontextmanager
async def vigil_up(tmp_path, port: int, *flags: str) -> AsyncIterator[subprocess.Popen[bytes]]:
    """`vigil up` on a data dir under tmp_path, yielded once /health answers 200; killed on
    the way out if the test did not stop it."""
    with (tmp_path / "up.log").open("wb") as log:
        proc = await asyncio.to_thread(
            subprocess.Popen, [sys.executable, "-m", "vigil.cli", "up", "--data-dir",
                               str(tmp_path / "data"), "--port", str(port), *flags],
            env=vigil_env(), stdout=log, stderr=log)
    try:
        async with aiohttp.ClientSession() as http:

            async def healthy() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return proc.poll() is not None

            await wait_for(healthy, timeout=90, every=0.5)
        assert proc.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def interrupt(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C: vigil up drains, stops its children and exits 0."""
    proc.send_signal(signal.SIGINT)
    assert await asyncio.to_thread(proc.wait, 60) == 0


async def test_vigil_up_runs_and_stops_cleanly(tmp_path):
    port = free_port()
    data = tmp_path / "data"
    api = f"http://127.0.0.1:{port}"
    async with vigil_up(tmp_path, port) as proc:
        async with aiohttp.ClientSession() as http:

            async def recorded() -> bool:
                async with http.get(f"{api}/api/v1/status") as resp:
                    body = await resp.json()
                return any(m["status"] == "down" and m["id"] == "closed-port"
                           for m in body["monitors"])

            await wait_for(recorded, timeout=30, every=0.5)
            async with http.get(f"{api}/api/v1/monitors/closed-port/uptime") as resp:
                assert (await resp.json())["down"] >= 1
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("redis-server" in c.name() for c in children)
        postmaster = int((data / "postgres" / "postmaster.pid").read_text().split()[0])
        assert psutil.pid_exists(postmaster)
        await interrupt(proc)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left behind: {alive}"
    assert not psutil.pid_exists(postmaster) or psutil.Process(postmaster).status() == "zombie"
    log_text = (tmp_path / "up.log").read_text()
    assert "Vigil is up" in log_text
    assert "checks done" in log_text or "status changed" in log_text


async def test_flags_replace_the_embedded_parts(tmp_path, redis_url, postgres_dsn, pool):
    data = tmp_path / "data"
    async with vigil_up(tmp_path, free_port(), "--redis-url", redis_url,
                        "--postgres-dsn", postgres_dsn, "--examples", "") as proc:
        assert psutil.Process(proc.pid).children() == []
        assert not (data / "postgres").exists()
        assert not (data / "redis").exists()
        assert (data / "chdb").exists()
        await interrupt(proc)
