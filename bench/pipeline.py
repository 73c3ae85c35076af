"""The whole Vigil pipeline as separate OS processes, for a bounded time: throughput, lag,
accounting, CPU and memory per component.

What it starts (all on 127.0.0.1, all stopped by this script, by pid, in finally blocks):
a redis-server on a free port (no persistence), an embedded Postgres and a chDB path in a
temporary directory, an HTTP target (bench/target.py: asyncio on uvloop, or nginx), then
`python -m vigil.cli` processes: `scheduler`, E x `executor`, `sink status`,
`sink clickhouse`. N http monitors, all pointing at the target, are validated by the monitor
definition (executors.kinds.SCHEMA) and stored through engine.store (one transaction) before
the scheduler starts.

How it measures:
- warm-up: once every process is up and the scheduler has dispatched, one more interval
  (every monitor has had its first slot), then the measured window of --duration seconds;
- CPU seconds (user+system, psutil) per process between the window's two samples; peak RSS
  per process, polled every 0.5 s for the whole run; the same for redis-server, the target
  and Postgres (postmaster and its children);
- at the end of the window the scheduler gets SIGTERM; `dispatched` is read from the
  scheduler's stats hash; the script waits (bounded) until the executors group and both
  result groups have nothing pending and have been delivered the last entry, then stops the
  executors and sinks (SIGTERM) and records their exit codes;
- a fresh process (`python -m vigil.accounting`: chDB admits one process per data path)
  counts check_results: rows with FINAL, unique check ids, duplicates, outcomes, and for the
  rows *scheduled inside the window* the lag quantiles finished - scheduled (result on the
  results stream) and inserted - scheduled (row written to ClickHouse).
lost = dispatched - unique rows; duplicates = rows with FINAL - unique rows.
Rates, lags and CPU per 1,000 checks use only the rows scheduled inside the window.

Run (from the repository root, venv active):
    python bench/pipeline.py --monitors 500 --interval 5 --duration 15          # small
    python bench/pipeline.py                                     # 10,000 monitors, 10 s, 60 s
    python bench/pipeline.py --sweep 1000,1500,2000               # offered checks/s per run
    python bench/pipeline.py --target nginx                       # nginx as the HTTP target
    python bench/pipeline.py --target-delay-ms 100 --concurrency 1024  # a target 100 ms away
The figures are printed and written as JSON to bench/out/pipeline-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
import redis
from procs import (
    BenchError,
    ProcessGroup,
    report_run,
    spawn,
    vigil,
    vigil_roles,
    wait_until,
    write_figures,
)
from sampling import MIB, Component, RssSampler, command_delta, command_stats, machine_busy
from stack import (
    KEYS,
    Offered,
    Stack,
    account,
    add_load_arguments,
    all_drained,
    dispatched,
    groups_exist,
    seed_monitors,
)

from engine import store
from engine.connections import postgres_pool

READY_TIMEOUT_S = 120.0
# A sweep step passes with p99 (finished - scheduled) under this and nothing lost or doubled.
P99_LIMIT_MS = 1000.0


@dataclass(frozen=True)
class Config(Offered):
    executors: int
    concurrency: int
    timeout_ms: int
    target: str
    target_delay_ms: float
    drain_timeout_s: float
    keep: bool
    evaluator: bool


def status_rows(dsn: str) -> int:
    async def count() -> int:
        pool = await postgres_pool(dsn)
        try:
            return len(await store.latest_status(pool))
        finally:
            await pool.close()

    return asyncio.run(count())


# --- one run ------------------------------------------------------------------------------------

class Run(ProcessGroup):
    """Everything one pipeline run starts, so that `close()` can stop all of it."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.workdir = Path(tempfile.mkdtemp(prefix="vigil-bench-"))
        super().__init__(self.workdir, "pipeline")
        self.stack = Stack(self.workdir, cfg.target, target_delay_ms=cfg.target_delay_ms)
        self.components: list[Component] = []
        self.sampler = RssSampler(self.components)

    def add(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self.procs[name] = proc
        self.components.append(Component(name, proc.pid))

    def start_stack(self) -> redis.Redis:
        """The servers, measured and watched; then the monitors, before the scheduler starts."""
        s = self.stack
        s.start()
        assert s.target is not None
        self.watched.update(redis=s.redis_proc, target=s.target)
        self.components += [Component("redis-server", s.redis_proc.pid),
                            Component("target", s.target.pid, children=True),
                            Component("postgres", s.postgres_pid, children=True)]
        seeded = seed_monitors(s.dsn, self.cfg.monitors, self.cfg.interval_ms,
                               self.cfg.timeout_ms, s.target_url)
        print(f"{self.cfg.monitors:,} monitors validated and stored in {seeded:.2f} s",
              flush=True)
        return redis.Redis(port=s.redis_port)

    def start_vigil(self) -> None:
        for name, args, extra in vigil_roles(self.cfg.executors, self.cfg.concurrency,
                                             self.cfg.evaluator):
            env = {**self.stack.env, **extra, "VIGIL_INSTANCE_ID": name}
            self.add(name, spawn(vigil(*args), self.workdir / f"{name}.log", env))

    def sample_cpu(self, attr: str) -> None:
        for c in self.components:
            setattr(c, attr, c.cpu())

    def close(self, failed: bool) -> None:
        self.sampler.stop()
        self.stop_all()  # Vigil's processes, then the servers they use
        self.stack.stop()
        if failed or self.cfg.keep:
            print(f"logs and data kept in {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def measure(run: Run, r: redis.Redis) -> dict[str, Any]:
    """Warm-up, the measured window, the scheduler's stop and the drain. Raw figures."""
    cfg = run.cfg

    def ready() -> bool:
        run.check_alive()
        return groups_exist(r) and dispatched(r) > 0

    wait_until(ready, READY_TIMEOUT_S, "processes ready and first checks dispatched", 0.25)
    run.sleep_watching(cfg.interval_s)  # warm-up: every monitor has had its first slot
    busy0, total0 = machine_busy()
    run.sample_cpu("cpu_start")
    w0, d0, cmd0 = time.time(), dispatched(r), command_stats(r)
    run.sleep_watching(cfg.duration_s)
    run.sample_cpu("cpu_end")
    w1, d1, cmd1 = time.time(), dispatched(r), command_stats(r)
    busy1, total1 = machine_busy()
    run.stop("scheduler")
    total_dispatched = dispatched(r)
    t_drain = time.monotonic()
    try:
        wait_until(lambda: all_drained(r, cfg.evaluator), cfg.drain_timeout_s, "drain", 0.25)
        drain_ok = True
    except BenchError:
        drain_ok = False
    drain_s = time.monotonic() - t_drain
    for name in [n for n in run.procs if n.startswith("executor-")]:
        run.stop(name)
    for name in ("sink-status", "sink-clickhouse", "evaluator"):
        if name in run.procs:
            run.stop(name)
    stats = {k.decode(): int(v) for k, v in r.hgetall(KEYS.stats).items()}
    return {
        "window": {"start_ms": int(w0 * 1000), "end_ms": int(w1 * 1000), "seconds": w1 - w0},
        "dispatched_in_window": d1 - d0, "dispatched": total_dispatched,
        "skipped": stats.get("skipped", 0), "deadletters": int(r.xlen(KEYS.deadletter)),
        "drained": drain_ok, "drain_seconds": round(drain_s, 2),
        "machine_cpu_busy_share": (busy1 - busy0) / max(1e-9, total1 - total0),
        "redis_commands": command_delta(cmd0, cmd1),
        "events": int(r.xlen(KEYS.events)) if r.exists(KEYS.events) else 0,
    }


def figures(cfg: Config, run: Run, raw: dict[str, Any], counts: dict[str, Any],
            status: int) -> dict[str, Any]:
    window_s = raw["window"]["seconds"]
    checks = counts["window"]["unique"]
    per_k = 1000 / checks if checks else float("nan")
    cpu: dict[str, dict[str, float]] = {}
    for c in run.components:
        cpu[c.name] = {"cpu_s": c.cpu_window, "cores": c.cpu_window / window_s,
                       "peak_rss_mib": c.peak_rss / MIB}
    executors = [c for c in run.components if c.name.startswith("executor-")]
    cpu["executors-total"] = {"cpu_s": sum(c.cpu_window for c in executors),
                              "cores": sum(c.cpu_window for c in executors) / window_s,
                              "peak_rss_mib": sum(c.peak_rss for c in executors) / MIB}
    for v in cpu.values():
        v["cpu_s_per_1k_checks"] = v["cpu_s"] * per_k
    # The target is the load, not the system under test; the totals row double-counts.
    contenders = {k: v for k, v in cpu.items() if k not in ("target", "executors-total")}
    top = max(contenders, key=lambda k: contenders[k]["cores"])
    return {
        "config": asdict(cfg) | {"offered_per_s": cfg.offered_per_s,
                                 "cpus": psutil.cpu_count()},
        **raw,
        "dispatch_rate_per_s": raw["dispatched_in_window"] / window_s,
        "completed_per_s": checks / window_s,
        "finished_in_window_per_s": counts["window"]["finished"] / window_s,
        "clickhouse_rows_per_s": counts["window"]["inserted"] / window_s,
        "results": counts,
        "lost": raw["dispatched"] - counts["unique"],
        "duplicates": counts["rows"] - counts["unique"],
        "status_rows": status,
        "cpu": cpu,
        "top_cpu": {"process": top, "cores": contenders[top]["cores"]},
        "exit_codes": run.exit_codes,
    }


def run_pipeline(cfg: Config) -> dict[str, Any]:
    run = Run(cfg)
    failed = True
    try:
        r = run.start_stack()
        run.start_vigil()
        run.sampler.start()  # after the last Popen: preexec_fn and threads do not mix
        raw = measure(run, r)
        r.close()
        counts = account(run.stack.chdb_url, raw["window"]["start_ms"], raw["window"]["end_ms"])
        result = figures(cfg, run, raw, counts, status_rows(run.stack.dsn))
        failed = False
        return result
    finally:
        run.close(failed)


# --- output -------------------------------------------------------------------------------------

def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f} ms"


def report(res: dict[str, Any]) -> str:
    c, w, rs = res["config"], res["window"], res["results"]
    rw = rs["window"]
    lf, li = rw["lag_finished_ms"], rw["lag_inserted_ms"]
    delay = f" answering {c['target_delay_ms']:g} ms late" if c["target_delay_ms"] else ""
    lines = [
        f"Vigil pipeline: {c['executors']} executor(s) x concurrency {c['concurrency']}, "
        f"target {c['target']}{delay}, {c['cpus']} CPUs "
        f"(machine busy {res['machine_cpu_busy_share']:.0%} in the window)",
        f"monitors         {c['monitors']:,}   interval {c['interval_s']:g} s   "
        f"offered {c['offered_per_s']:,.1f} checks/s",
        f"window           {w['seconds']:.1f} s after {c['interval_s']:g} s warm-up",
        f"dispatched       {res['dispatched']:,} in all   "
        f"dispatch rate {res['dispatch_rate_per_s']:,.1f}/s   skipped {res['skipped']}",
        f"completed        {res['completed_per_s']:,.1f} checks/s (scheduled in window: "
        f"{rw['unique']:,}; finished in window: {res['finished_in_window_per_s']:,.1f}/s)",
        f"results          rows {rs['rows']:,}   unique {rs['unique']:,}   "
        f"lost {res['lost']:,}   duplicates {res['duplicates']:,}   "
        f"(raw rows before FINAL {rs['raw_rows']:,}; dead letters "
        f"{res['deadletters']})",
        "outcomes         " + "   ".join(f"{k} {v:,}" for k, v in rs["outcomes"].items()),
        f"lag to result    p50 {_ms(lf['p50'])}   p99 {_ms(lf['p99'])}   max {_ms(lf['max'])}"
        "   (finished - scheduled)",
        f"lag to CH row    p50 {_ms(li['p50'])}   p99 {_ms(li['p99'])}   max {_ms(li['max'])}"
        "   (inserted - scheduled)",
        f"clickhouse       {res['clickhouse_rows_per_s']:,.1f} rows/s inserted in window",
        f"with a status    {res['status_rows']:,} monitors   drained {res['drained']} "
        f"in {res['drain_seconds']} s   exit codes "
        + " ".join(f"{k}={v}" for k, v in res["exit_codes"].items()),
        f"{'component':<18}{'CPU s':>9}{'s/1k checks':>13}{'cores':>8}{'peak RSS MiB':>14}",
    ]
    for name, v in res["cpu"].items():
        lines.append(f"  {name:<16}{v['cpu_s']:>9.2f}{v['cpu_s_per_1k_checks']:>13.3f}"
                     f"{v['cores']:>8.2f}{v['peak_rss_mib']:>14.1f}")
    lines.append("redis commands in the window, per 1k checks (calls, server ms; commands "
                 "called from Lua also count under their own name):")
    per_k = 1000 / rw["unique"] if rw["unique"] else float("nan")
    lines += [f"  {name:<16}{v['calls'] * per_k:>10,.1f} calls{v['usec'] * per_k / 1000:>10,.1f}"
              " ms" for name, v in list(res["redis_commands"].items())[:8]]
    top = res["top_cpu"]
    lines.append(f"highest CPU share: {top['process']} ({top['cores']:.2f} cores); "
                 "postgres and target: RSS summed over their processes (shared memory "
                 "counted in each)")
    return "\n".join(lines)


def passes(res: dict[str, Any]) -> bool:
    p99 = res["results"]["window"]["lag_finished_ms"]["p99"]
    return (p99 is not None and p99 < P99_LIMIT_MS and res["lost"] == 0
            and res["duplicates"] == 0 and res["drained"])


def sweep_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in results if passes(r)]
    best = max(ok, key=lambda r: r["config"]["offered_per_s"]) if ok else None
    failing = [r for r in results if not passes(r)]
    # Where it breaks, the busiest process is the one that saturates first.
    probe = min(failing, key=lambda r: r["config"]["offered_per_s"]) if failing else best
    return {
        "criteria": f"p99 (finished - scheduled) < {P99_LIMIT_MS:g} ms, lost 0, duplicates 0",
        "best_rate_per_s": best["config"]["offered_per_s"] if best else None,
        "saturates_first": probe["top_cpu"] | {"at_rate_per_s": probe["config"]["offered_per_s"]}
        if probe else None,
        "steps": [{"offered_per_s": r["config"]["offered_per_s"],
                   "completed_per_s": r["completed_per_s"],
                   "p99_ms": r["results"]["window"]["lag_finished_ms"]["p99"], "lost": r["lost"],
                   "duplicates": r["duplicates"], "passes": passes(r), "top_cpu": r["top_cpu"]}
                  for r in results],
    }


def vigil_cpu_per_1k(res: dict[str, Any]) -> float:
    """CPU seconds per 1,000 checks of Vigil's own processes (not the servers, not the
    target)."""
    return sum(v["cpu_s_per_1k_checks"] for k, v in res["cpu"].items()
               if k in res["exit_codes"] and not k.startswith("executors-"))


def evaluator_cost(args: argparse.Namespace) -> dict[str, Any]:
    """The same load without the evaluator, then with it."""
    off = run_pipeline(config(args, args.monitors, evaluator=False))
    print(report(off), flush=True)
    on = run_pipeline(config(args, args.monitors, evaluator=True))
    print(report(on), flush=True)
    return {"off": off, "on": on,
            "completed_ratio": on["completed_per_s"] / off["completed_per_s"],
            "vigil_cpu_s_per_1k": {"off": vigil_cpu_per_1k(off), "on": vigil_cpu_per_1k(on)},
            "evaluator_cpu_s_per_1k": on["cpu"]["evaluator"]["cpu_s_per_1k_checks"]}


def report_cost(res: dict[str, Any]) -> str:
    off, on, cpu = res["off"], res["on"], res["vigil_cpu_s_per_1k"]
    lag = [r["results"]["window"]["lag_finished_ms"]["p99"] for r in (off, on)]
    return "\n".join([
        "evaluator off vs on, same load:",
        f"  completed       {off['completed_per_s']:,.1f}/s vs {on['completed_per_s']:,.1f}/s "
        f"(ratio {res['completed_ratio']:.3f})",
        f"  Vigil CPU       {cpu['off']:.3f} vs {cpu['on']:.3f} s per 1k checks "
        f"(+{cpu['on'] - cpu['off']:.3f}; the evaluator itself "
        f"{res['evaluator_cpu_s_per_1k']:.3f})",
        f"  p99 lag         {_ms(lag[0])} vs {_ms(lag[1])}",
        f"  lost/dup        {off['lost']}/{off['duplicates']} vs {on['lost']}/{on['duplicates']}"
        f"   events written {on['events']:,}"])


# --- main ---------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(ap, monitors=10_000, interval=10.0, duration=60.0)
    ap.add_argument("--executors", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=512, help="VIGIL_CONCURRENCY")
    ap.add_argument("--timeout-ms", type=int, default=None,
                    help="monitor timeout (default: min(5000, interval/2))")
    ap.add_argument("--target", choices=("python", "nginx"), default="python")
    ap.add_argument("--target-delay-ms", type=float, default=0.0,
                    help="python target only: each answer this long late, as a distant "
                         "service's")
    ap.add_argument("--drain-timeout", type=float, default=120.0,
                    help="longest wait for the streams to drain after the window, s")
    ap.add_argument("--sweep", help="offered rates in checks/s, e.g. 1000,1500,2000: one run "
                                    "each with monitors = rate * interval")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    ap.add_argument("--evaluator", choices=("on", "off", "both"), default="on",
                    help="run `vigil evaluator` too; both: a run without, then one with, and "
                         "what evaluation costs")
    args = ap.parse_args(argv)
    if args.target_delay_ms and args.target != "python":
        ap.error("--target-delay-ms: only the python target answers late (--target python)")
    return args


def config(args: argparse.Namespace, monitors: int, evaluator: bool = True) -> Config:
    interval_ms = int(args.interval * 1000)
    timeout = args.timeout_ms or min(5000, interval_ms // 2)
    return Config(monitors=monitors, interval_s=args.interval, duration_s=args.duration,
                  executors=args.executors, concurrency=args.concurrency,
                  timeout_ms=min(timeout, interval_ms - 1), target=args.target,
                  target_delay_ms=args.target_delay_ms,
                  drain_timeout_s=args.drain_timeout, keep=args.keep, evaluator=evaluator)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A plain `kill` must still run the finally blocks that stop what this script started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if args.evaluator == "both":
        return report_run("pipeline-evaluator", lambda: evaluator_cost(args), report_cost)
    if not args.sweep:
        return report_run("pipeline", lambda: run_pipeline(
            config(args, args.monitors, args.evaluator == "on")), report)
    rates = [float(x) for x in args.sweep.split(",") if x.strip()]
    results = []
    for rate in rates:
        print(f"--- offered {rate:g} checks/s ---", flush=True)
        try:
            res = run_pipeline(config(args, round(rate * args.interval),
                                      args.evaluator != "off"))
        except BenchError as exc:
            # A process that dies under load is a failed step; higher rates would fail too.
            print(f"run failed at {rate:g} checks/s: {exc}", file=sys.stderr)
            break
        print(report(res), flush=True)
        results.append(res)
    if not results:
        return 1
    summary = sweep_summary(results)
    print("--- sweep ---")
    for step in summary["steps"]:
        print(f"  {step['offered_per_s']:>8,.0f}/s offered  {step['completed_per_s']:>8,.1f}/s "
              f"done  p99 {_ms(step['p99_ms']):>9}  lost {step['lost']}  dup "
              f"{step['duplicates']}  {'PASS' if step['passes'] else 'FAIL'}  busiest "
              f"{step['top_cpu']['process']} {step['top_cpu']['cores']:.2f} cores")
    print(f"highest passing rate ({summary['criteria']}): {summary['best_rate_per_s']}")
    print(f"saturates first: {summary['saturates_first']}")
    print(f"written to {write_figures('pipeline', {'sweep': summary, 'runs': results})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
