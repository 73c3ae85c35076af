"""`vigil up`: the embedded default starts, records results and stops with no child left."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.support.helpers import free_port, vigil_env, wait_for
from tests.support.up import closed_port_recorded, interrupt, vigil_up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


async def test_vigil_up_runs_and_stops_cleanly(home):
    port = free_port()
    data = home / "data"
    api = f"http://127.0.0.1:{port}"
    async with vigil_up(home, port) as proc:
        await closed_port_recorded(port)
        async with (aiohttp.ClientSession() as http,
                    http.get(f"{api}/api/v1/monitors/closed-port/uptime") as resp):
            assert (await resp.json())["down"] >= 1
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("redis-server" in c.name() for c in children)
        postmaster = int((data / "postgres" / "postmaster.pid").read_text().split()[0])
        assert psutil.pid_exists(postmaster)
        await interrupt(proc)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left behind: {alive}"
    assert not psutil.pid_exists(postmaster) or psutil.Process(postmaster).status() == "zombie"
    log_text = (home / "up.log").read_text()
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


def servers_of(data: Path) -> list[psutil.Process]:
    """The postgres and redis-server processes working in `data`: both run with their working
    directory in their data directory (postgres -D, redis-server --dir)."""
    found = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] not in ("postgres", "redis-server"):
            continue
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if Path(proc.cwd()).is_relative_to(data):
                found.append(proc)
    return found


@contextlib.contextmanager
def stopping_leftovers(data: Path) -> Iterator[None]:
    """Whatever the test shows, servers that its own `vigil up` left in `data` do not outlive
    it: they are stopped on the way out (SIGTERM: a Postgres shuts down smartly)."""
    try:
        yield
    finally:
        left = servers_of(data)
        for proc in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        psutil.wait_procs(left, timeout=30)


async def test_a_killed_vigil_up_leaves_nothing_on_the_next_start(home):
    """SIGKILL gives vigil up no chance to stop its servers: redis-server dies with it
    (PDEATHSIG), the embedded Postgres (a pg_ctl daemon) does not. The next start on the same
    data directory stops that Postgres and starts its own; after Ctrl-C nothing is left."""
    data = (home / "data").resolve()
    pid_file = data / "postgres" / "postmaster.pid"
    with stopping_leftovers(data):
        async with vigil_up(home, free_port(), "--examples", "") as proc:
            stale = psutil.Process(int(pid_file.read_text().split()[0]))
            proc.kill()
            await asyncio.to_thread(proc.wait)

        async def redis_gone() -> bool:
            return all(p.name() != "redis-server" for p in servers_of(data))

        await wait_for(redis_gone, timeout=15)
        # What a SIGKILL leaves: this Postgres, still serving the data directory.
        assert stale.is_running()
        assert stale.status() != psutil.STATUS_ZOMBIE
        assert stale in servers_of(data)

        async with vigil_up(home, free_port(), "--examples", "") as proc:
            # Gone (a zombie until whichever process adopted it reaps it).
            assert not stale.is_running() or stale.status() == psutil.STATUS_ZOMBIE
            assert int(pid_file.read_text().split()[0]) != stale.pid
            assert {p.name() for p in servers_of(data)} == {"postgres", "redis-server"}
            # While it runs, the data directory is its own: another start stops nothing there.
            other = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "vigil.cli", "up", "--data-dir", str(data),
                                 "--port", str(free_port())],
                env=vigil_env(), capture_output=True, text=True, timeout=60, check=False)
            assert other.returncode == 2, other.stderr
            assert f"in use by another vigil up (pid {proc.pid})" in other.stderr
            await interrupt(proc)

        async def all_gone() -> bool:
            return not servers_of(data)

        await wait_for(all_gone, timeout=30)
