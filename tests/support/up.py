"""`vigil up` as a real process: started on a data dir, yielded once healthy, stopped by
Ctrl-C the way a user stops it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from tests.support.helpers import reaped, vigil_env, wait_for


@contextlib.asynccontextmanager
async def vigil_up(home: Path, port: int, *flags: str) -> AsyncIterator[subprocess.Popen[bytes]]:
    """`vigil up` on a data dir under home, yielded once /health answers 200; killed on
    the way out if the test did not stop it."""
    with (home / "up.log").open("wb") as log:
        proc = await asyncio.to_thread(
            subprocess.Popen, [sys.executable, "-m", "vigil.cli", "up", "--data-dir",
                               str(home / "data"), "--port", str(port), *flags],
            env=vigil_env(), stdout=log, stderr=log)
    with reaped(proc):
        async with aiohttp.ClientSession() as http:

            async def healthy() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return proc.poll() is not None

            await wait_for(healthy, timeout=90, every=0.5)
        assert proc.poll() is None, (home / "up.log").read_text()[-3000:]
        yield proc


async def interrupt(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C: vigil up drains, stops its children and exits 0."""
    proc.send_signal(signal.SIGINT)
    assert await asyncio.to_thread(proc.wait, 60) == 0


async def closed_port_recorded(port: int, timeout: float = 60) -> None:
    """Wait until `vigil up` on `port` shows its example monitor `closed-port` down: the
    scheduler, an executor and the status sink have all done their part."""
    async with aiohttp.ClientSession() as http:

        async def recorded() -> bool:
            async with http.get(f"http://127.0.0.1:{port}/api/v1/status") as resp:
                body = await resp.json()
            return any(m["status"] == "down" and m["id"] == "closed-port"
                       for m in body["monitors"])

        await wait_for(recorded, timeout=timeout, every=0.5)
