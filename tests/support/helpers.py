"""Small helpers every kind of test uses: free ports, bounded waits, a role running for a block,
stored monitors, results, process environments."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from engine import store
from engine.events import CheckResult, Outcome, check_id
from engine.keys import Keys
from engine.monitors import MonitorBase
from engine.secrets import Keyring
from scheduler.plan import compile_plan


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(predicate: Callable[[], Awaitable[object]], timeout: float = 10.0,
                   every: float = 0.05) -> None:
    """Poll an async predicate until true; fail with the timeout otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def running(role: Any) -> AsyncIterator[None]:
    """`role.run(stop)` as a task for the length of the block; stopped and awaited after it."""
    stop = asyncio.Event()
    task = asyncio.create_task(role.run(stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def store_monitors(pool: asyncpg.Pool, monitors: list[MonitorBase], source: str) -> None:
    """Store monitors as `apply` (source "file") or the API (source "api") would."""
    async with pool.acquire() as conn, conn.transaction():
        for monitor in monitors:
            await store.upsert(conn, monitor, source, Keyring.from_env())


async def put_plan(r: aioredis.Redis, keys: Keys, row: Any, monitor_id: str) -> None:
    """A monitor's plan and its shape written by hand, without the sync's shape count."""
    plan = compile_plan(row)
    await r.hset(keys.plan, monitor_id, plan.plan)
    await r.hset(keys.shapes, plan.digest, plan.shape)


def check_result(monitor_id: str = "m", scheduled_ms: int = 1_000, outcome: Outcome = "up", *,
                 region: str = "default", **fields: Any) -> CheckResult:
    """A check.result as an executor publishes it: started 1 ms and finished 2 ms after its
    slot unless `fields` say otherwise, no measurement unless `fields` give one."""
    values: dict[str, Any] = {"started_ms": scheduled_ms + 1, "finished_ms": scheduled_ms + 2,
                              **fields}
    return CheckResult(check_id=check_id(monitor_id, region, scheduled_ms), monitor_id=monitor_id,
                       region=region, scheduled_ms=scheduled_ms, outcome=outcome, **values)


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def vigil_env(**extra: str) -> dict[str, str]:
    """This process's environment without any VIGIL_ variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update(extra)
    return env


@contextlib.contextmanager
def reaped(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """`proc` killed and waited for on the way out if it still runs: a failing test leaves no
    process behind."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def exit_code_on_sigterm(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """SIGTERM, then the exit code (subprocess.TimeoutExpired if it has not stopped by then)."""
    proc.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(proc.wait, timeout)
