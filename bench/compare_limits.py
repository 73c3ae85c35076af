"""bench/compare.py's physical limits, for context: redis-benchmark XADD pipelined (-P 64)
and not (-P 1), bare aiohttp GETs and bare asyncio Protocol + httptools GETs with a fresh
connection (bench/baselines.py) and bare Node http.get with agent: false
(bench/peers/bullmq/baseline.js), against the run's redis-server and target."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis
from compare_runs import PEER, Shared
from procs import BENCH, REPO

REDIS_BENCH_RE = re.compile(r"([\d.]+) requests per second")


def redis_benchmark(port: int, n: int, pipeline: int, clients: int) -> float | None:
    binary = shutil.which("redis-benchmark") or "/usr/bin/redis-benchmark"
    if not Path(binary).exists():
        return None
    done = subprocess.run([binary, "-h", "127.0.0.1", "-p", str(port), "-n", str(n), "-P",
                           str(pipeline), "-c", str(clients), "-q", "XADD", "bench", "*", "f",
                           "v"], capture_output=True, text=True, timeout=300, check=False)
    found = REDIS_BENCH_RE.findall(done.stdout.replace("\r", "\n"))
    return float(found[-1]) if found else None


def last_json_line(args: list[str], cwd: Path) -> dict[str, Any]:
    """A baseline's figures: the last line it prints, or its error."""
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False)
    if done.returncode != 0:
        return {"error": done.stderr[-500:]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def limits(shared: Shared, r: redis.Redis, tiny: bool) -> dict[str, Any]:
    n_xadd, n_http = (20_000, 2_000) if tiny else (200_000, 20_000)
    port, url = shared.stack.redis_port, shared.stack.target_url
    out: dict[str, Any] = {}
    r.flushall()
    out["redis_xadd_P64_per_s"] = redis_benchmark(port, n_xadd, 64, 50)
    out["redis_xadd_P1_per_s"] = redis_benchmark(port, n_xadd, 1, 50)
    r.flushall()
    for mode in ("aiohttp", "protocol"):
        out[mode] = last_json_line([sys.executable, str(BENCH / "baselines.py"), mode,
                                    "--url", url, "--n", str(n_http)], REPO)
    out["node_http"] = last_json_line([shared.node, "baseline.js", url, str(n_http)], PEER)
    return out
