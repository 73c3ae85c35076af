"""The embedded servers of `vigil up` start cleanly over what an earlier run left in their
directory: a server still running there is stopped first, a pid file naming a process that is
not that server (its pid reused) is set aside without touching that process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.helpers import wait_for
from vigil.embedded import EmbeddedPostgres, RedisServer, Survivor

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is no server, whose pid a stale pid file may name."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


def ping(server: RedisServer) -> bool:
    client = redis.Redis(unix_socket_path=str(server.socket))
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


async def test_a_redis_server_left_running_is_stopped_first(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.dir.mkdir()
    # As an earlier run leaves it when it could not stop its child: not dying with this one.
    left = await asyncio.to_thread(subprocess.Popen, server.args, start_new_session=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async def up() -> bool:
            return server.pid_file.exists() and ping(server)

        await wait_for(up)
        assert int(server.pid_file.read_text()) == left.pid
        await asyncio.to_thread(server.start)
        try:
            assert await asyncio.to_thread(left.wait, 10) == 0  # SIGTERM: a clean shutdown
            assert ping(server)
            assert server.proc is not None
            assert int(server.pid_file.read_text()) == server.proc.pid
        finally:
            server.stop()
    finally:
        if left.poll() is None:
            left.kill()
            left.wait()
    assert not server.pid_file.exists()  # redis-server removes its own on a clean stop


def test_stale_redis_files_naming_another_process(tmp_path: Path,
                                                  bystander: subprocess.Popen[bytes]) -> None:
    server = RedisServer(tmp_path / "redis")
    server.dir.mkdir()
    server.pid_file.write_text(f"{bystander.pid}\n")
    server.socket.write_text("")  # a socket file nothing listens on, as a SIGKILL leaves it
    assert Survivor.named(server.pid_file, "redis-server") is None
    server.start()
    try:
        assert ping(server)
    finally:
        server.stop()
    assert bystander.poll() is None  # not ours: never signalled


def test_a_stale_postmaster_pid_naming_another_process(tmp_path: Path,
                                                       bystander: subprocess.Popen[bytes]
                                                       ) -> None:
    """After a reboot, postmaster.pid may name a live process of another program; Postgres
    would take it for a postmaster still running on the directory and refuse to start."""
    first = EmbeddedPostgres(tmp_path)
    first.start()
    first.stop()
    pid_file = first.dir / "postmaster.pid"
    lines = ["0", str(first.dir), "1700000000", "5432", str(first.dir), "", "0 0", "ready"]
    pid_file.write_text("\n".join([str(bystander.pid), *lines[1:]]) + "\n")
    again = EmbeddedPostgres(tmp_path)
    again.start()
    try:
        assert Survivor.named(pid_file, "postgres") is not None
        assert int(pid_file.read_text().split()[0]) != bystander.pid
    finally:
        again.stop()
    assert bystander.poll() is None
