"""The scheduler's dispatch path alone: how many check.due events per second one scheduler
can emit, against a baseline of plain pipelined XADDs of entries of the same size.

It starts its own redis-server (free port, no persistence, 127.0.0.1), seeds M http monitors
into Redis the way the scheduler's sync does (the plan hash via scheduler.plan.compile_plan and
the due ZSET, every monitor due now, written with pipelines), then calls
scheduler.dispatch.Dispatcher(r, Keys("0")).dispatch() in a loop until all M are
dispatched. The wall time gives dispatched checks/s. The baseline XADDs the same number of
check.due payloads of the same shape (built beforehand, so only the writes are timed) to
another stream, in pipelines of the same size as one dispatch call (--limit), over the same
client; the ratio Vigil-dispatch / raw-XADD says what the Lua script (ZRANGEBYSCORE, HGET,
string building, ZADD per monitor) costs over the bare stream write. redis-server's CPU and
this process's CPU are reported for both phases: the dispatch's work is in Redis, the
baseline's mostly in redis-py packing commands, so the ratio of redis-server CPU per entry is
printed too (psutil's CPU times tick at 10 ms: use 100,000 monitors for that figure).
Each round starts from an empty Redis; with several rounds the median ratio is printed.
Runs on uvloop, as `vigil scheduler` does.

With --steady SECONDS it measures the running loop instead: M monitors on their grids (phases
spread over --interval-ms, as the sync places them), scheduler.dispatch.Dispatcher.run in a
child process (`vigil scheduler`'s loop, nothing else) for SECONDS, no executors. This process
reads the checks stream as it grows and trims what it read (XTRIM MINID), and takes each
check's lag from its slot (scheduled_ms) to the stream entry's id, which is redis-server's
clock when the XADD ran (ms). Printed: checks/s, script calls/s, checks per call, lag p50,
p99 and max, and redis-server's and the loop's CPU as % of one core. The first second is
left out (the loop starting).

Run (from the repository root, venv active):
    python bench/dispatch.py                       # 100,000 monitors, 3 rounds
    python bench/dispatch.py --monitors 20000 --rounds 1
    python bench/dispatch.py --steady 20 --monitors 1000000 --interval-ms 60000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import psutil
import redis
import redis.asyncio as aioredis
import uvloop
from procs import REPO, start_redis

from engine.clock import redis_ms
from engine.events import CheckDue, check_id
from engine.keys import Keys
from engine.streams import event_of
from scheduler.dispatch import DISPATCH_LIMIT, DISPATCH_SCRIPT, Dispatcher
from scheduler.plan import compile_plan
from scheduler.schedule import phase_ms
from vigil.embedded import RedisServer

KEYS = Keys("0")
SEED_CHUNK = 1_000
INTERVAL_MS = 60_000
BASELINE_STREAM = "bench:raw-xadd"


@dataclass
class Phase:
    name: str
    count: int
    wall_s: float
    redis_cpu_s: float
    client_cpu_s: float
    calls: int
    entry_bytes: float

    @property
    def rate(self) -> float:
        return self.count / self.wall_s

    @property
    def redis_us_per_entry(self) -> float:
        return self.redis_cpu_s / self.count * 1e6

    def line(self) -> str:
        return (f"{self.name:<22}{self.count:>9,} in {self.wall_s:6.3f} s = "
                f"{self.rate:>9,.0f}/s   redis-server CPU {self.redis_cpu_s:6.3f} s "
                f"({self.redis_us_per_entry:5.2f} us/entry)   "
                f"client CPU {self.client_cpu_s:6.3f} s   {self.calls:,} round trips   "
                f"{self.entry_bytes:,.0f} B/entry")


class Meter:
    """Wall time, redis-server CPU and this process's CPU across a block."""

    def __init__(self, redis_proc: psutil.Process) -> None:
        self.redis_proc = redis_proc

    def _redis_cpu(self) -> float:
        t = self.redis_proc.cpu_times()
        return t.user + t.system

    def __enter__(self) -> Meter:
        self.t0, self.r0, self.c0 = time.perf_counter(), self._redis_cpu(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.redis_cpu = self._redis_cpu() - self.r0
        self.client_cpu = time.process_time() - self.c0


def monitor_row(i: int, interval_ms: int = INTERVAL_MS) -> dict[str, object]:
    mid = f"bench-{i:07d}"
    return {"id": mid, "kind": "http", "interval_ms": interval_ms, "timeout_ms": 5_000,
            "regions": ["default"], "version": 1,
            "spec": {"url": f"http://127.0.0.1:8080/{mid}", "method": "GET",
                     "expected_status": [200], "verify_tls": True}}


async def seed(r: aioredis.Redis, monitors: int, due_ms: int | None,
               interval_ms: int = INTERVAL_MS) -> float:
    """Plan hash + due ZSET, all due at due_ms (None: plans only), in pipelines; returns the
    seconds it took."""
    t0 = time.perf_counter()
    for start in range(0, monitors, SEED_CHUNK):
        rows = [monitor_row(i, interval_ms)
                for i in range(start, min(monitors, start + SEED_CHUNK))]
        async with r.pipeline(transaction=False) as pipe:
            for row in rows:
                plan = compile_plan(row)
                pipe.hset(KEYS.plan, str(row["id"]), plan.plan)
                pipe.hset(KEYS.shapes, plan.digest, plan.shape)
            if due_ms is not None:
                pipe.zadd(KEYS.due, {str(row["id"]): due_ms for row in rows})
            await pipe.execute()
    await r.sadd(KEYS.regions, "default")
    return time.perf_counter() - t0


async def place_on_grid(r: aioredis.Redis, monitors: int, start_ms: int,
                        interval_ms: int) -> None:
    """Each monitor due at its first slot at or after start_ms, as the sync places it."""
    for start in range(0, monitors, SEED_CHUNK * 10):
        ids = [f"bench-{i:07d}" for i in range(start, min(monitors, start + SEED_CHUNK * 10))]
        await r.zadd(KEYS.due, {mid: start_ms + (phase_ms(mid, interval_ms) - start_ms)
                                % interval_ms for mid in ids})


async def dispatch_all(r: aioredis.Redis, monitors: int, limit: int, meter: Meter) -> Phase:
    dispatcher = Dispatcher(r, KEYS, limit=limit)
    await r.script_load(DISPATCH_SCRIPT)  # so the first EVALSHA finds it, before the clock
    total = calls = 0
    with meter:
        while total < monitors:
            n, *_ = await dispatcher.dispatch()
            calls += 1
            total += n
            if n == 0:
                break
    stream = KEYS.checks("default")
    sample = await r.xrange(stream, count=100)
    size = statistics.fmean(len(event_of(fields)) for _, fields in sample) if sample else 0.0
    if total != monitors or await r.xlen(stream) != monitors:
        raise RuntimeError(f"dispatched {total}, stream holds {await r.xlen(stream)}, "
                           f"expected {monitors}")
    return Phase("Vigil dispatch", total, meter.wall, meter.redis_cpu, meter.client_cpu,
                 calls, size)


def due_payloads(monitors: int, now_ms: int) -> list[bytes]:
    """check.due events shaped like the ones dispatch.lua writes (same spec, same fields)."""
    out = []
    for i in range(monitors):
        row = monitor_row(i)
        mid = str(row["id"])
        out.append(CheckDue(check_id=check_id(mid, "default", now_ms), monitor_id=mid,
                            region="default", scheduled_ms=now_ms,
                            deadline_ms=now_ms + INTERVAL_MS, interval_ms=INTERVAL_MS,
                            timeout_ms=5_000, spec_version=1, kind="http",
                            spec=row["spec"]).to_json())
    return out


async def raw_xadd(r: aioredis.Redis, payloads: list[bytes], batch: int, meter: Meter) -> Phase:
    calls = 0
    with meter:
        for start in range(0, len(payloads), batch):
            async with r.pipeline(transaction=False) as pipe:
                for payload in payloads[start:start + batch]:
                    pipe.xadd(BASELINE_STREAM, {b"e": payload})
                await pipe.execute()
            calls += 1
    size = statistics.fmean(len(p) for p in payloads)
    return Phase("raw pipelined XADD", len(payloads), meter.wall, meter.redis_cpu,
                 meter.client_cpu, calls, size)


async def one_round(r: aioredis.Redis, meter: Meter, monitors: int,
                    limit: int) -> tuple[Phase, Phase, float]:
    await r.flushall()
    now_ms = await redis_ms(r)  # the dispatch script's clock
    seed_s = await seed(r, monitors, now_ms - 1)
    vigil = await dispatch_all(r, monitors, limit, meter)
    await r.delete(KEYS.checks("default"))
    payloads = due_payloads(monitors, now_ms)
    raw = await raw_xadd(r, payloads, limit, meter)
    return vigil, raw, seed_s


async def bench(args: argparse.Namespace, server: RedisServer) -> None:
    assert server.proc is not None
    r = aioredis.Redis(port=server.port)
    try:
        meter = Meter(psutil.Process(server.proc.pid))
        ratios = []
        print(f"{args.monitors:,} monitors, {args.limit} per dispatch call / per XADD pipeline, "
              f"{args.rounds} round(s), redis-server {server.args[0]}")
        for n in range(args.rounds):
            vigil, raw, seed_s = await one_round(r, meter, args.monitors, args.limit)
            ratios.append(vigil.rate / raw.rate)
            print(f"round {n + 1}: seeded in {seed_s:.2f} s "
                  f"({args.monitors / seed_s:,.0f} monitors/s)")
            print("  " + vigil.line())
            print("  " + raw.line())
            print(f"  ratio Vigil dispatch / raw XADD: {ratios[-1]:.2f} (wall);  "
                  f"redis-server CPU per entry, Vigil / raw: "
                  f"{vigil.redis_us_per_entry / max(raw.redis_us_per_entry, 1e-9):.1f}x")
        if args.rounds > 1:
            print(f"median ratio over {args.rounds} rounds: {statistics.median(ratios):.2f}")
    finally:
        await r.aclose()


async def child_loop(port: int, seconds: float, limit: int) -> None:
    """Dispatcher.run for `seconds`, counting its script calls; prints them and its CPU."""
    r = aioredis.Redis(port=port)
    dispatcher = Dispatcher(r, KEYS, limit=limit)
    calls = 0
    dispatch = dispatcher.dispatch

    async def counted() -> tuple[int, int, bool, int, int]:
        nonlocal calls
        calls += 1
        return await dispatch()

    dispatcher.dispatch = counted  # type: ignore[method-assign]
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    cpu0 = time.process_time()
    await dispatcher.run(stop)
    print(json.dumps({"calls": calls, "cpu_s": time.process_time() - cpu0}))
    await r.aclose()


def percentile(values: list[int], q: float) -> float:
    return float(values[min(len(values) - 1, int(q * len(values)))]) if values else 0.0


async def prepare(port: int, args: argparse.Namespace) -> tuple[float, int, float]:
    """Plans, then due entries on their grids from a start far enough ahead to place them
    all: (seed seconds, first slot ms, how long the loop must run to cover --steady)."""
    r = aioredis.Redis(port=port)
    seed_s = await seed(r, args.monitors, None, args.interval_ms)
    start = await redis_ms(r) + 3_000 + args.monitors // 100
    await place_on_grid(r, args.monitors, start, args.interval_ms)
    run_s = (start - await redis_ms(r)) / 1000 + args.steady
    await r.aclose()
    return seed_s, start, run_s


def steady(args: argparse.Namespace, server: RedisServer) -> None:
    """The running loop for --steady seconds against monitors on their grids (module doc)."""
    assert server.proc is not None
    r = redis.Redis(port=server.port)
    stream = KEYS.checks("default")
    seed_s, start, run_s = uvloop.run(prepare(server.port, args))
    print(f"{args.monitors:,} monitors every {args.interval_ms:,} ms "
          f"({args.monitors / args.interval_ms * 1000:,.0f} checks/s offered), seeded in "
          f"{seed_s:.1f} s; Dispatcher.run for {args.steady:g} s from the first slot, "
          f"limit {args.limit}")
    redis_proc = psutil.Process(server.proc.pid)
    cpu = redis_proc.cpu_times()
    redis0, t0 = cpu.user + cpu.system, time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", str(server.port), "--steady", str(run_s),
         "--limit", str(args.limit)], stdout=subprocess.PIPE, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    lags: list[int] = []
    last = "-"
    try:
        while True:
            done = child.poll() is not None
            while entries := r.xrange(stream, min=last, count=10_000):
                for entry_id, fields in entries:
                    slot = orjson.loads(event_of(fields))["scheduled_ms"]
                    if start + 1_000 <= slot < start + args.steady * 1000:
                        lags.append(int(entry_id.split(b"-")[0]) - slot)
                last = "(" + entries[-1][0].decode()
                r.xtrim(stream, minid=last[1:])
            if done:
                break
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        cpu = redis_proc.cpu_times()
        redis_cpu = cpu.user + cpu.system - redis0
        assert child.stdout is not None
        figures = json.loads(child.stdout.read())
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        r.close()
    lags.sort()
    measured_s = args.steady - 1
    print(f"  {len(lags):,} checks after the first second = {len(lags) / measured_s:,.0f}/s; "
          f"{figures['calls']:,} script calls = {figures['calls'] / run_s:,.0f}/s, "
          f"{len(lags) / max(figures['calls'], 1):,.1f} checks per call")
    print(f"  lag slot -> XADD (ms): p50 {percentile(lags, 0.5):.0f}, "
          f"p99 {percentile(lags, 0.99):.0f}, max {lags[-1] if lags else 0}; "
          f"{sum(1 for lag in lags if lag <= 2) / max(len(lags), 1):.1%} within 2 ms")
    print(f"  CPU, % of one core over {wall:.1f} s: redis-server {redis_cpu / wall:.0%}, "
          f"the dispatch loop {figures['cpu_s'] / run_s:.0%} (idle before the first slot "
          f"included)")


def main() -> int:
    # A plain `kill` must still run the finally blocks that stop what this script started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--monitors", type=int, default=100_000)
    ap.add_argument("--limit", type=int, default=DISPATCH_LIMIT,
                    help="monitors per dispatch call (the scheduler's DISPATCH_LIMIT)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steady", type=float, metavar="SECONDS",
                    help="measure Dispatcher.run for this long instead (module doc)")
    ap.add_argument("--interval-ms", type=int, default=INTERVAL_MS)
    ap.add_argument("--child", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        uvloop.run(child_loop(args.child, args.steady, args.limit))
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="vigil-bench-sched-"))
    try:
        server = start_redis(workdir)
        try:
            if args.steady:
                steady(args, server)
            else:
                uvloop.run(bench(args, server))
        finally:
            server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
