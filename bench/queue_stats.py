"""What the operations view costs a scrape: engine.queue.stream_stats (every stream, group and
consumer of a shard) on a shard with R regions and K other keys (a monitor's evaluation
state, push beats), timed against a PING on the same client in the same run: its time in
PINGs is how many round trips' worth it costs. It should grow slowly with regions (one script
reads every stream in Redis) and with keys (the scan that finds the regions' streams looks at
10,000 keys a call).

It starts its own redis-server (free port, no persistence, 127.0.0.1); per case, from an
empty Redis: R checks streams of 1,000 entries each with the executors' group having read
half of them without acknowledging (two consumers), the results and events streams with
their groups, and K string keys; then CALLS calls of each, median and p99.

Run (from the repository root, venv active):
    python bench/queue_stats.py
    python bench/queue_stats.py --calls 50 --regions 1 10 100 --keys 0 100000
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import uvloop
from procs import BenchError, report_run, start_redis

from engine import queue
from engine.keys import EVENT_GROUPS, EXECUTOR_GROUP, RESULT_GROUPS, Keys
from engine.streams import EVENT_FIELD, ensure_group
from vigil.embedded import RedisServer

KEYS = Keys("0")
ENTRIES = 1_000
CHUNK = 1_000


async def seed(r: aioredis.Redis, regions: int, others: int) -> None:
    await r.flushall()
    for i in range(regions):
        stream = KEYS.checks(f"region-{i}")
        await ensure_group(r, stream, EXECUTOR_GROUP)
        async with r.pipeline(transaction=False) as pipe:
            for n in range(ENTRIES):
                pipe.xadd(stream, {EVENT_FIELD: f"check {n}"})
            await pipe.execute()
        for consumer in ("exec-a", "exec-b"):
            await r.xreadgroup(EXECUTOR_GROUP, consumer, {stream: ">"}, count=ENTRIES // 4)
    for stream, groups in ((KEYS.results, RESULT_GROUPS), (KEYS.events, EVENT_GROUPS)):
        for group in groups:
            await ensure_group(r, stream, group)
    for start in range(0, others, CHUNK):
        async with r.pipeline(transaction=False) as pipe:
            for n in range(start, min(others, start + CHUNK)):
                pipe.set(KEYS.evaluation(f"m{n}"), b"x" * 64)
            await pipe.execute()


async def timed(call: Callable[[], Awaitable[Any]], calls: int) -> list[float]:
    await call()  # a warm connection and script cache
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        await call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def p99(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * 0.99))]


async def bench(args: argparse.Namespace, server: RedisServer) -> dict[str, Any]:
    r = aioredis.Redis(host="127.0.0.1", port=server.port)
    cases = []
    try:
        for regions in args.regions:
            for others in args.keys:
                await seed(r, regions, others)
                found = await queue.stream_stats(r, KEYS)
                if len(found) != regions + 3:
                    raise BenchError(f"{len(found)} streams found, expected {regions + 3}")
                ping = await timed(r.ping, args.calls)
                stats = await timed(lambda: queue.stream_stats(r, KEYS), args.calls)
                cases.append({"regions": regions, "other_keys": others,
                              "groups": regions + len(RESULT_GROUPS) + len(EVENT_GROUPS),
                              "ping_median_ms": statistics.median(ping),
                              "stats_median_ms": statistics.median(stats),
                              "stats_p99_ms": p99(stats),
                              "in_pings": statistics.median(stats) / statistics.median(ping)})
    finally:
        await r.aclose()
    return {"calls": args.calls, "entries_per_checks_stream": ENTRIES, "cases": cases}


def report(res: dict[str, Any]) -> str:
    base = res["cases"][0]
    lines = [f"engine.queue.stream_stats, {res['calls']} calls per case "
             f"({res['entries_per_checks_stream']} entries per checks stream)",
             f"{'regions':>7} {'other keys':>10} {'groups':>6} {'ping ms':>8} "
             f"{'stats ms':>9} {'p99 ms':>8} {'in pings':>8} {'vs first':>8}"]
    for c in res["cases"]:
        lines.append(f"{c['regions']:>7} {c['other_keys']:>10} {c['groups']:>6} "
                     f"{c['ping_median_ms']:>8.3f} {c['stats_median_ms']:>9.3f} "
                     f"{c['stats_p99_ms']:>8.3f} {c['in_pings']:>8.1f} "
                     f"{c['stats_median_ms'] / base['stats_median_ms']:>8.2f}")
    return "\n".join(lines)


def main() -> int:
    # A plain `kill` must still run the finally blocks that stop what this script started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--regions", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--keys", type=int, nargs="+", default=[0, 20_000])
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="vigil-bench-queue-"))

    def run() -> dict[str, Any]:
        server = start_redis(workdir)
        try:
            return uvloop.run(bench(args, server))
        finally:
            server.stop()

    try:
        return report_run("queue_stats", run, report)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
