"""Process helpers shared by the benchmarks: start, watch and stop what a run needs, and
write its figures (JSON under bench/out/, not committed).

Every child gets PR_SET_PDEATHSIG, so a benchmark killed without its finally blocks still
takes its children with it; everything binds 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vigil.embedded import EmbeddedError, RedisServer, die_with_parent

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
STOP_TIMEOUT_S = 60.0


class BenchError(RuntimeError):
    """A benchmark run could not go on (a process did not start, a wait timed out)."""


def write_figures(name: str, payload: Any) -> Path:
    """bench/out/<name>-<timestamp>.json"""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def report_run(name: str, run: Callable[[], dict[str, Any]],
               report: Callable[[dict[str, Any]], str]) -> int:
    """One run of bench/<name>.py: its report printed and its figures written; a BenchError
    is one line on stderr and exit status 1."""
    try:
        res = run()
    except BenchError as exc:
        print(f"bench/{name}.py: {exc}", file=sys.stderr)
        return 1
    print(report(res))
    print(f"written to {write_figures(name, res)}")
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> int | str:
    """SIGTERM, wait; SIGKILL if it does not exit in time. The exit code, or 'killed'."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return "killed"


def wait_until(predicate: Any, timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_redis(workdir: Path, binary: str | None = None,
                extra_args: Sequence[str] = ()) -> RedisServer:
    """A redis-server on a free 127.0.0.1 port, no persistence, started (it answers PING)."""
    server = RedisServer(workdir, port=free_port(), binary=binary, extra_args=extra_args)
    try:
        server.start()
    except EmbeddedError as exc:
        raise BenchError(str(exc)) from None
    return server


def start_target(workdir: Path, port: int, kind: str, delay_ms: float = 0.0
                 ) -> subprocess.Popen[bytes]:
    delay = ["--delay-ms", str(delay_ms)] if delay_ms else []
    proc = spawn([sys.executable, str(BENCH / "target.py"), "--port", str(port), "--server",
                  kind, "--workdir", str(workdir / "nginx"), *delay], workdir / "target.log")
    wait_until(lambda: port_open(port) or proc.poll() is not None, 10, "target start")
    if proc.poll() is not None:
        raise BenchError(f"target exited; see {workdir / 'target.log'}")
    return proc


def vigil_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update(extra, VIGIL_LOG_FORMAT="json", PYTHONUNBUFFERED="1")
    return env


def vigil(*args: str) -> list[str]:
    return [sys.executable, "-m", "vigil.cli", *args]


def vigil_roles(executors: int, concurrency: int, evaluator: bool = False
                ) -> list[tuple[str, list[str], dict[str, str]]]:
    """Vigil's processes for a pipeline run: (name, `vigil` arguments, extra environment)."""
    roles: list[tuple[str, list[str], dict[str, str]]] = [("scheduler", ["scheduler"], {})]
    roles += [(f"executor-{i + 1}", ["executor"], {"VIGIL_CONCURRENCY": str(concurrency)})
              for i in range(executors)]
    if evaluator:
        roles.append(("evaluator", ["evaluator"], {}))
    return [*roles, ("sink-status", ["sink", "status"], {}),
            ("sink-clickhouse", ["sink", "clickhouse"], {})]


class ProcessGroup:
    """The named processes one run starts, logging to `logdir/<name>.log`: watched while the
    run goes on, stopped by pid in reverse start order, exit codes kept."""

    def __init__(self, logdir: Path, label: str) -> None:
        self.logdir = logdir
        self.label = label
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.watched: dict[str, subprocess.Popen[bytes]] = {}  # watched, stopped by others
        self.exit_codes: dict[str, int | str] = {}

    def log_tail(self, name: str, chars: int = 1500) -> str:
        path = self.logdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def check_alive(self) -> None:
        for name, proc in {**self.watched, **self.procs}.items():
            if proc.poll() is not None:
                raise BenchError(f"{self.label}: {name} exited with {proc.returncode}:\n"
                                 f"{self.log_tail(name)}")

    def sleep_watching(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.check_alive()
            time.sleep(min(0.5, left))

    def stop(self, name: str) -> None:
        self.exit_codes[name] = stop_process(self.procs.pop(name))

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                self.stop(name)
