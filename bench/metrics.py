"""What a scrape of /metrics costs: the stream and group gauges are read from Redis at each
scrape (engine.exporter), so a scrape is a Redis scan and two pipelined round trips more than
rendering the registry. This times Exporter.render (read the gauges, then render) against a
baseline measured in the same run: rendering the same registry, its gauges already read.

It starts its own redis-server (free port, no persistence, 127.0.0.1) and writes the streams
of one shard: --regions checks streams of --entries entries each, with the executors' group
and two consumers that have read half; the results and events streams with their groups.
Then --scrapes scrapes of the api's exporter (every stream and group) and of one executor's
(its region's group only): median and p99 time per scrape, and the bytes of one. Runs on
uvloop, as the roles do.

Run (from the repository root, venv active):
    python bench/metrics.py                          # 10 regions, 1,000 scrapes
    python bench/metrics.py --regions 50 --scrapes 500
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import uvloop
from procs import report_run, start_redis
from prometheus_client import generate_latest

from engine.exporter import Exporter
from engine.keys import EVENT_GROUPS, EXECUTOR_GROUP, RESULT_GROUPS, Keys
from engine.streams import EVENT_FIELD, ensure_group

KEYS = Keys("0")


async def seed(r: aioredis.Redis, regions: int, entries: int) -> None:
    streams = [(KEYS.checks(f"region-{i}"), (EXECUTOR_GROUP,)) for i in range(regions)]
    streams += [(KEYS.results, RESULT_GROUPS), (KEYS.events, EVENT_GROUPS)]
    for stream, groups in streams:
        async with r.pipeline(transaction=False) as pipe:
            for _ in range(entries):
                pipe.xadd(stream, {EVENT_FIELD: b"{}"})
            await pipe.execute()
        for group in groups:
            await ensure_group(r, stream, group)
            for consumer in ("c1", "c2"):
                await r.xreadgroup(group, consumer, {stream: ">"}, count=entries // 4)


def timed(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"median_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000}


async def measure(exporter: Exporter, scrapes: int) -> dict[str, Any]:
    body = await exporter.render()
    rendered, baseline = [], []
    for _ in range(scrapes):
        start = time.perf_counter()
        await exporter.render()
        rendered.append(time.perf_counter() - start)
        start = time.perf_counter()
        generate_latest(exporter.registry)
        baseline.append(time.perf_counter() - start)
    scrape, base = timed(rendered), timed(baseline)
    return {"scrape": scrape, "baseline": base, "bytes": len(body),
            "ratio_median": scrape["median_ms"] / base["median_ms"]}


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    server = start_redis(workdir / "redis")
    r = aioredis.from_url(server.url)
    try:
        await seed(r, args.regions, args.entries)
        return {"regions": args.regions, "entries": args.entries, "scrapes": args.scrapes,
                "api": await measure(Exporter(r, KEYS, ["api"]), args.scrapes),
                "executor": await measure(Exporter(r, KEYS, ["executor"], "region-0"),
                                          args.scrapes)}
    finally:
        await r.aclose()
        server.stop()


def report(res: dict[str, Any]) -> str:
    lines = [f"{res['regions']} regions, {res['entries']:,} entries per stream, "
             f"{res['scrapes']:,} scrapes each"]
    for name in ("api", "executor"):
        m = res[name]
        lines.append(f"{name:<9} scrape median {m['scrape']['median_ms']:7.3f} ms  p99 "
                     f"{m['scrape']['p99_ms']:7.3f} ms   render only median "
                     f"{m['baseline']['median_ms']:7.3f} ms  p99 {m['baseline']['p99_ms']:7.3f}"
                     f" ms   ratio {m['ratio_median']:5.2f}   {m['bytes']:,} B")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--regions", type=int, default=10)
    p.add_argument("--entries", type=int, default=1_000)
    p.add_argument("--scrapes", type=int, default=1_000)
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="vigil-bench-metrics-"))
    try:
        return report_run("metrics", lambda: uvloop.run(bench(args, workdir)), report)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
