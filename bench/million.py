"""A million monitors (issue 12, item 3): what the scheduler, Redis and the API cost at that
count. Nothing is checked: the monitors are synthetic HTTP monitors on 127.0.0.1 targets.

It starts its own redis-server (free port, no persistence, 127.0.0.1) and embedded Postgres,
migrates, COPYs --monitors monitors into `monitors` (the spec as `vigil monitors apply` stores
it: every default filled in) and vacuums them, then measures, each once, with the machine's
1-minute load average (on a shared machine a wall time means little without it):
1. start-up sync: scheduler.sync.MonitorSync.reconcile() into an empty Redis (the first one a
   scheduler runs), with redis-server's and Postgres's CPU;
2. Redis memory per monitor for plan and schedule: INFO used_memory before and after the
   sync, and MEMORY USAGE of each key the sync writes, divided by the monitor count;
3. a reconcile with nothing changed, and one after --changed monitors changed in Postgres;
4. `vigil monitors apply` of --apply monitors from YAML files (engine.monitors parses and
   validates them, engine.store.apply writes them): files read, then applied new, then
   applied again unchanged;
5. the monitors API: GET /api/v1/monitors?limit=--page walked to the end by its `next`
   cursor, over every monitor (the million and the applied ones).
Dispatch keeping up at this count is bench/dispatch.py --steady (the running loop, lag from
slot to XADD): python bench/dispatch.py --steady 20 --monitors 1000000 --interval-ms 60000

Run (from the repository root, venv active):
    python bench/million.py                        # 1,000,000 monitors, apply 100,000
    python bench/million.py --monitors 100000 --apply 10000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psutil
import redis.asyncio as aioredis
import uvloop
import yaml
from aiohttp.test_utils import TestClient, TestServer
from procs import start_redis

from api import tokens
from api.app import make_app
from engine import store
from engine.clickhouse import ClickHouse
from engine.connections import postgres_pool
from engine.keys import Keys
from engine.migrate import migrate
from engine.secrets import Keyring
from executors.kinds import SCHEMA
from scheduler.sync import MonitorSync
from vigil.embedded import EmbeddedPostgres, RedisServer

KEYS = Keys("0")
INTERVAL_MS = 60_000
COPY_CHUNK = 50_000
COLUMNS = ("id", "name", "kind", "interval_ms", "timeout_ms", "regions", "tags", "spec",
           "enabled", "public_details", "source", "alerting")
NO_KEY = Keyring([])


def definition(mid: str) -> dict[str, Any]:
    return {"id": mid, "kind": "http", "interval": "60s",
            "http": {"url": f"http://127.0.0.1:8080/{mid}"}}


def rows(start: int, stop: int) -> Iterator[tuple[Any, ...]]:
    """Monitor rows as the store writes them: one validated definition's spec and alerting,
    each with its own id and URL (validating a million definitions is part 4's subject)."""
    monitor = SCHEMA.validate(definition("x"))
    spec = store.sealed_spec(NO_KEY, monitor, None)
    alerting = orjson.dumps(store.alerting(monitor)).decode()
    for i in range(start, stop):
        mid = f"mon-{i:07d}"
        yield (mid, mid, "http", monitor.interval_ms, monitor.timeout_ms, ["default"], [],
               orjson.dumps({**spec, "url": f"http://127.0.0.1:8080/{mid}"}).decode(),
               True, False, "api", alerting)


class Cpu:
    """CPU seconds of redis-server and of Postgres (the postmaster, its backends, and the
    ones that ended) across a block, and its wall time."""

    def __init__(self, redis_pid: int, postgres_pid: int) -> None:
        self.redis = psutil.Process(redis_pid)
        self.postgres = psutil.Process(postgres_pid)

    def _pg(self) -> float:
        t = self.postgres.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in self.postgres.children():
            with_times = child.cpu_times()
            total += with_times.user + with_times.system
        return total

    def _redis(self) -> float:
        t = self.redis.cpu_times()
        return t.user + t.system

    def __enter__(self) -> Cpu:
        self.t0, self.r0, self.p0 = time.perf_counter(), self._redis(), self._pg()
        self.c0 = time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.redis_s = self._redis() - self.r0
        self.pg_s = self._pg() - self.p0
        self.client_s = time.process_time() - self.c0

    def line(self, what: str) -> str:
        return (f"{what:<44}{self.wall:8.2f} s   redis-server CPU {self.redis_s:6.2f} s   "
                f"Postgres CPU {self.pg_s:6.2f} s   this process CPU {self.client_s:6.2f} s   "
                f"load {os.getloadavg()[0]:.1f}")


async def used_memory(r: aioredis.Redis) -> int:
    return int((await r.info("memory"))["used_memory"])


async def memory(r: aioredis.Redis, before: int, count: int) -> None:
    used = await used_memory(r)
    print(f"Redis used_memory after the sync: {(used - before) / count:,.1f} B per monitor "
          f"({(used - before) / 2**20:,.1f} MiB for {count:,})")
    for key in (KEYS.due, KEYS.plan, KEYS.shapes, KEYS.revisions, KEYS.rules, KEYS.regions):
        usage = await r.memory_usage(key, samples=0) or 0
        print(f"  MEMORY USAGE {key:<24}{usage / count:8.1f} B per monitor")
    sample = await r.hget(KEYS.plan, "mon-0000001") or b""
    rules = await r.hget(KEYS.rules, "mon-0000001") or b""
    print(f"  one plan {len(sample)} B, one monitor's rules {len(rules)} B")


async def insert(pool: asyncpg.Pool, count: int) -> float:
    t0 = time.perf_counter()
    for start in range(0, count, COPY_CHUNK):
        await pool.copy_records_to_table("monitors", records=list(
            rows(start, min(count, start + COPY_CHUNK))), columns=COLUMNS)
    # As a table that has been in use: hint bits set, statistics current; the first read of
    # freshly COPYed rows would otherwise pay for writing them into every page.
    await pool.execute("VACUUM ANALYZE monitors")
    return time.perf_counter() - t0


async def measured(cpu: Cpu, what: str, fn: Callable[[], Awaitable[Any]]) -> Any:
    with cpu:
        result = await fn()
    print(cpu.line(what))
    return result


async def apply_files(pool: asyncpg.Pool, cpu: Cpu, count: int, workdir: Path) -> None:
    files = workdir / "monitors"
    files.mkdir()
    per_file = 10_000
    for n, start in enumerate(range(0, count, per_file)):
        entries = [definition(f"file-{i:07d}") for i in range(start, min(count, start + per_file))]
        (files / f"part-{n:03d}.yaml").write_text(yaml.safe_dump({"monitors": entries}))
    with cpu:
        monitors = SCHEMA.load_path(str(files))
    print(cpu.line(f"apply {count:,}: files read and validated"))
    plan = await measured(cpu, f"apply {count:,}: written (all new)", lambda: store.apply(
        pool, monitors, prune=False, dry_run=False, keyring=NO_KEY))
    print(f"  {plan.summary()}")
    plan = await measured(cpu, f"apply {count:,} again: nothing changed", lambda: store.apply(
        pool, monitors, prune=False, dry_run=False, keyring=NO_KEY))
    print(f"  {plan.summary()}")


async def walk_api(r: aioredis.Redis, pool: asyncpg.Pool, ch: ClickHouse, page: int) -> None:
    token = await tokens.create(pool, "bench", "read")
    app = make_app(r, pool, ch, KEYS, SCHEMA)
    async with TestClient(TestServer(app)) as client:
        headers = {"Authorization": f"Bearer {token}"}
        times: list[float] = []
        seen = 0
        url: str | None = f"/api/v1/monitors?limit={page}"
        t0 = time.perf_counter()
        while url:
            started = time.perf_counter()
            async with client.get(url, headers=headers) as resp:
                body = orjson.loads(await resp.read())
            times.append(time.perf_counter() - started)
            seen += len(body["monitors"])
            url = body.get("next")
        wall = time.perf_counter() - t0
    median = statistics.median(times) * 1000
    p99 = sorted(times)[int(0.99 * (len(times) - 1))] * 1000
    print(f"GET /api/v1/monitors?limit={page} walked by `next`: {seen:,} monitors in "
          f"{len(times):,} pages, {wall:.1f} s; per page median {median:.1f} ms, p99 {p99:.1f} ms, "
          f"first {times[0] * 1000:.1f} ms, last {times[-1] * 1000:.1f} ms")


async def bench(args: argparse.Namespace, redis_server: RedisServer, dsn: str, pg_pid: int,
                workdir: Path) -> None:
    assert redis_server.proc is not None
    ch = ClickHouse.from_url(f"chdb://{workdir / 'chdb'}")
    await migrate(dsn, ch)
    pool = await postgres_pool(dsn, max_size=8)
    r = aioredis.Redis(port=redis_server.port)
    cpu = Cpu(redis_server.proc.pid, pg_pid)
    try:
        print(f"{args.monitors:,} HTTP monitors, every {INTERVAL_MS // 1000} s, one region")
        print(f"COPY into Postgres: {await insert(pool, args.monitors):.1f} s")
        sync = MonitorSync(r, pool, KEYS)
        before = await used_memory(r)
        await measured(cpu, "start-up sync (reconcile into an empty Redis)", sync.reconcile)
        await memory(r, before, args.monitors)
        await measured(cpu, "reconcile, nothing changed", sync.reconcile)
        await pool.execute("UPDATE monitors SET tags = '{changed}' WHERE id IN (SELECT id FROM "
                           "monitors ORDER BY id LIMIT $1)", args.changed)
        await measured(cpu, f"reconcile, {args.changed:,} changed", sync.reconcile)
        await apply_files(pool, cpu, args.apply, workdir)
        await walk_api(r, pool, ch, args.page)
    finally:
        await r.aclose()
        await pool.close()
        await ch.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--monitors", type=int, default=1_000_000)
    ap.add_argument("--changed", type=int, default=1_000)
    ap.add_argument("--apply", type=int, default=100_000)
    ap.add_argument("--page", type=int, default=1_000)
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="vigil-bench-million-"))
    postgres = EmbeddedPostgres(workdir)
    try:
        redis_server = start_redis(workdir)
        try:
            dsn = postgres.start()
            uvloop.run(bench(args, redis_server, dsn, postgres.server.get_pid(), workdir))
        finally:
            redis_server.stop()
            postgres.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
