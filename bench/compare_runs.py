"""bench/compare.py's runs: one class per system behind one interface (how it starts, when
its warm-up ends, what it profiles, how it stops, how its result stream is read), and the
measurement every run shares (Run.execute)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import orjson
import redis
from compare_profiles import (
    cpuprofile_summary,
    node_cpu_prof_args,
    pyspy_summary,
    start_pyspy,
)
from compare_scoring import BULLMQ, VIGIL, Load, Row, quantile, score
from procs import (
    BENCH,
    BenchError,
    ProcessGroup,
    spawn,
    stop_process,
    vigil,
    vigil_roles,
    wait_until,
)
from sampling import MIB, Component, MemorySampler, command_delta, command_stats, machine_busy
from stack import KEYS, Stack, all_drained, dispatched, groups_exist, seed_monitors

from engine.streams import event_of, parse_id

PEER = BENCH / "peers" / "bullmq"
PEER_RESULTS = "peer:results"
POLL_S = 0.25
READY_TIMEOUT_S = 120.0
DRAIN_S = 10.0  # Vigil, after the grace period: how long its streams may take to drain


@dataclass
class Shared:
    """What every run uses: the stack (Redis, the target, Postgres and chDB for Vigil's
    sinks) and the processes each system gets."""

    stack: Stack
    executors: int
    workers: int
    concurrency: int  # VIGIL_CONCURRENCY
    peer_concurrency: int  # the BullMQ Worker's
    profile: bool
    node: str
    loaded_monitors: int = -1  # monitors currently in Postgres


class Collector(threading.Thread):
    """Reads a result stream as it grows (XRANGE from the last id read); trims it if asked.
    `parse` gets each entry's id and fields."""

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
            self.rows.extend(self.parse(entry_id, fields) for entry_id, fields in batch)
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


class Run(ProcessGroup, ABC):
    """What one system's run starts; close() stops it all (by pid, reverse start order)."""

    name: ClassVar[str]
    stream: ClassVar[str]  # where its results are read
    trim: ClassVar[bool]  # whether the collector trims that stream (no other consumer does)

    def __init__(self, load: Load, shared: Shared) -> None:
        self.load, self.shared = load, shared
        logdir = shared.stack.workdir / f"{self.name}-{time.strftime('%H%M%S')}"
        logdir.mkdir()
        super().__init__(logdir, self.name)
        self.own: list[Component] = []  # the system's processes
        assert shared.stack.target is not None
        # Not the system's: the target is the load (with its children: nginx's worker),
        # measured to see whether it is the limit.
        self.context = [Component("redis-server", shared.stack.redis_proc.pid),
                        Component("target", shared.stack.target.pid, children=True)]
        self.sampler: MemorySampler | None = None
        self.collector: Collector | None = None
        self.extra: dict[str, Any] = {}

    # --- what each system says ---

    @abstractmethod
    def start(self) -> None:
        """Start the system's processes (no thread runs yet: preexec_fn and threads do not
        mix)."""

    @abstractmethod
    def ready(self, r: redis.Redis) -> float:
        """Wait until the system runs; the epoch second its warm-up ends."""

    @abstractmethod
    def parse(self, entry_id: bytes, fields: dict[bytes, bytes]) -> Row:
        """One entry of its result stream (called in the collector's thread)."""

    @abstractmethod
    def complete(self, collected: dict[str, Any]) -> bool | None:
        """Whether the collector saw every result, where XINFO could not say."""

    @abstractmethod
    def profile_summary(self) -> dict[str, Any] | None:
        """The frames of --profile, if a profile was written."""

    def window_started(self) -> None:
        """The measured window begins."""

    def own_figures(self, w0: int, w1: int) -> dict[str, Any]:
        """Figures only this system has, over the results scheduled in [w0, w1)."""
        return {}

    def shutdown(self, r: redis.Redis) -> None:
        for name in list(self.procs):
            self.stop(name)

    # --- shared ---

    def add(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self.procs[name] = proc
        self.own.append(Component(name, proc.pid))

    def close(self) -> None:
        if self.sampler:
            self.sampler.stop()
        if self.collector and self.collector.is_alive():
            self.collector.halt.set()
            self.collector.join(5)
        self.stop_all()

    def wait_results(self, deadline: float, w0: int, w1: int) -> None:
        """Until every slot of the window has its result, or the grace period is over."""
        expected = self.load.expected_slots(w0, w1)
        assert self.collector is not None
        while time.time() < deadline:
            self.check_alive()
            done = {(r[0], r[1]) for r in list(self.collector.rows) if w0 <= r[1] < w1}
            if len(done) >= expected:
                return
            time.sleep(POLL_S)

    def execute(self, r: redis.Redis) -> dict[str, Any]:
        r.flushall()
        base_memory = int(r.info("memory")["used_memory"])
        self.start()
        port = self.shared.stack.redis_port
        self.sampler = MemorySampler(port, self.own + self.context, base_memory)
        self.sampler.start()
        self.collector = Collector(port, self.stream, self.parse, self.trim)
        self.collector.start()
        self.sleep_watching(max(0.0, self.ready(r) - time.time()))
        cpu0 = [c.cpu() for c in self.own + self.context]
        busy0, total0 = machine_busy()
        cmd0, w0 = command_stats(r), time.time()
        self.window_started()
        self.sleep_watching(self.load.duration_s)
        w1, cmd1 = time.time(), command_stats(r)
        for c, start in zip(self.own + self.context, cpu0, strict=True):
            c.cpu_start, c.cpu_end = start, c.cpu()
        busy1, total1 = machine_busy()
        deadline = w1 + self.load.grace_s
        w0_ms, w1_ms = int(w0 * 1000), int(w1 * 1000)
        self.wait_results(deadline, w0_ms, w1_ms)
        self.shutdown(r)
        self.sampler.stop()
        collected = self.collector.finish()
        collected["complete"] = self.complete(collected)
        checks = score(self.load, self.collector.rows, w0_ms, w1_ms, int(deadline * 1000))
        return {
            "system": self.name, "load": asdict(self.load) | {
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
            "exit_codes": self.exit_codes, **self.own_figures(w0_ms, w1_ms), **self.extra,
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


class VigilRun(Run):
    """`vigil scheduler`, E x `vigil executor`, both sinks; Postgres is part of the system."""

    name = VIGIL
    stream = KEYS.results
    trim = False  # the sinks consume and trim it

    def __init__(self, load: Load, shared: Shared) -> None:
        super().__init__(load, shared)
        self.context.append(Component("postgres", shared.stack.postgres_pid, children=True))
        self.profiler: subprocess.Popen[bytes] | None = None

    def load_monitors(self) -> None:
        """Vigil's monitors in Postgres (the peer takes its own through scheduler.js)."""
        s = self.shared
        if s.loaded_monitors != self.load.monitors:
            seed_monitors(s.stack.dsn, self.load.monitors, self.load.interval_ms,
                          self.load.timeout_ms, s.stack.target_url)
            s.loaded_monitors = self.load.monitors

    def start(self) -> None:
        self.load_monitors()
        for name, args, extra in vigil_roles(self.shared.executors, self.shared.concurrency):
            self.add(name, spawn(vigil(*args), self.logdir / f"{name}.log",
                                 {**self.shared.stack.env, **extra, "VIGIL_INSTANCE_ID": name}))

    def ready(self, r: redis.Redis) -> float:
        def up() -> bool:
            self.check_alive()
            return groups_exist(r) and dispatched(r) > 0

        wait_until(up, READY_TIMEOUT_S, "vigil: processes ready and first dispatch", 0.1)
        return time.time() + self.load.interval_s  # warm-up: every monitor had its first slot

    def parse(self, entry_id: bytes, fields: dict[bytes, bytes]) -> Row:
        """checked = the result's finished_ms (the executor's estimate of Redis time when
        the check ended, before its batched flush); finished = the entry's id (Redis's clock
        at the XADD)."""
        e = orjson.loads(event_of(fields))
        return (e["monitor_id"], int(e["scheduled_ms"]), int(e["started_ms"]),
                int(e["finished_ms"]), stream_ms(entry_id), str(e["outcome"]))

    def window_started(self) -> None:
        if self.shared.profile:
            self.profiler = start_pyspy(self.procs["executor-1"].pid, self.load.duration_s,
                                        self.logdir / "executor-1.pyspy.txt")

    def shutdown(self, r: redis.Redis) -> None:
        """Scheduler first, then (bounded) until the streams are drained, then the rest."""
        self.stop("scheduler")
        with contextlib.suppress(BenchError):
            wait_until(lambda: all_drained(r), DRAIN_S, "drain", POLL_S)
        self.extra["drained"] = all_drained(r)
        self.extra["dispatched"] = dispatched(r)
        super().shutdown(r)

    def complete(self, collected: dict[str, Any]) -> bool | None:
        known: bool | None = collected["complete"]
        if known is None and self.extra["drained"]:
            # Every dispatched check has exactly one result once drained (invariant 1).
            return bool(collected["read"] == self.extra["dispatched"])
        return known

    def profile_summary(self) -> dict[str, Any] | None:
        return pyspy_summary(self.logdir / "executor-1.pyspy.txt", "executor-1")

    def close(self) -> None:
        if self.profiler:
            stop_process(self.profiler, 30)
        super().close()


class BullMQRun(Run):
    """`node events.js` (the QueueEvents listener that records each `completed` event), `node
    scheduler.js` (one job scheduler per monitor; it upserts and exits), then W x `node
    worker.js`."""

    name = BULLMQ
    stream = PEER_RESULTS
    trim = True  # no consumer but the collector
    listener = "sink-events"  # a sink, as Vigil's: in the system's CPU, not in its core

    def __init__(self, load: Load, shared: Shared) -> None:
        super().__init__(load, shared)
        self.warm_until = 0.0
        self.deliveries: list[tuple[int, int]] = []  # scheduled, received - finished

    def env(self) -> dict[str, str]:
        s, load = self.shared, self.load
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEER_")}
        return env | {"PEER_REDIS_URL": f"redis://127.0.0.1:{s.stack.redis_port}/0",
                      "PEER_MONITORS": str(load.monitors),
                      "PEER_INTERVAL_MS": str(load.interval_ms),
                      "PEER_TIMEOUT_MS": str(load.timeout_ms),
                      "PEER_TARGET_URL": s.stack.target_url, "PEER_PHASES": "crc32",
                      "PEER_CONCURRENCY": str(s.peer_concurrency),
                      "PEER_RESULTS_STREAM": PEER_RESULTS}

    def start(self) -> None:
        """The listener (it reads the events stream from its start: nothing is missed while it
        comes up), scheduler.js (waited for: its rusage is the set-up cost), the workers."""
        env = self.env()
        self.add(self.listener, spawn([self.shared.node, str(PEER / "events.js")],
                                      self.logdir / f"{self.listener}.log", env))
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
                args += node_cpu_prof_args(self.logdir / "cpuprof")
            self.add(name, spawn([*args, str(PEER / "worker.js")], self.logdir / f"{name}.log",
                                 env | {"PEER_WORKER_ID": name}))
        # Warm-up: one interval after the earliest first slot (every monitor has had one).
        first = info["first_slot_ms"] or info["base_ms"]
        self.warm_until = first / 1000 + self.load.interval_s

    def ready(self, r: redis.Redis) -> float:
        return self.warm_until

    def parse(self, entry_id: bytes, fields: dict[bytes, bytes]) -> Row:
        """checked = the worker's clock when the GET ended; finished = the `completed`
        event's id (Redis's clock when moveToFinished marked the job completed)."""
        scheduled, finished = int(fields[b"scheduled_ms"]), int(fields[b"finished_ms"])
        self.deliveries.append((scheduled, int(fields[b"received_ms"]) - finished))
        return (fields[b"monitor_id"].decode(), scheduled, int(fields[b"started_ms"]),
                int(fields[b"checked_ms"]), finished, fields[b"outcome"].decode())

    def shutdown(self, r: redis.Redis) -> None:
        """The workers first (each reports how many jobs it completed), then, bounded, until
        the listener has recorded as many, then the listener."""
        workers = [name for name in self.procs if name != self.listener]
        for name in workers:
            self.stop(name)
        completed = sum(self.exit_report(name, "completed") for name in workers)
        assert self.collector is not None
        collector = self.collector
        with contextlib.suppress(BenchError):
            wait_until(lambda: len(collector.rows) >= completed, DRAIN_S, "listener", POLL_S)
        self.stop(self.listener)
        self.extra["worker_completed"] = completed
        self.extra["listener_received"] = self.exit_report(self.listener, "received")

    def exit_report(self, name: str, key: str) -> int:
        """A count from the JSON line a peer process prints last, when it stops on SIGTERM."""
        lines = self.log_tail(name).strip().splitlines()
        try:
            return int(json.loads(lines[-1])[key])
        except (IndexError, ValueError, KeyError, TypeError):
            raise BenchError(f"{self.label}: {name} ended without its count of {key!r} "
                             f"(exit {self.exit_codes.get(name)}):\n{self.log_tail(name)}"
                             ) from None

    def complete(self, collected: dict[str, Any]) -> bool | None:
        """Every completed job recorded (the events stream was not trimmed past the
        listener), and the collector read every record (it is the only trimmer)."""
        recorded = collected["read"] == self.extra["worker_completed"]
        known: bool | None = collected["complete"]
        return recorded and (True if known is None else known)

    def own_figures(self, w0: int, w1: int) -> dict[str, Any]:
        delays = sorted(d for scheduled, d in list(self.deliveries) if w0 <= scheduled < w1)
        return {"events_delivery_ms": {"p50": quantile(delays, 0.5),
                                       "p99": quantile(delays, 0.99),
                                       "max": float(delays[-1]) if delays else None}}

    def profile_summary(self) -> dict[str, Any] | None:
        return cpuprofile_summary(self.logdir / "cpuprof", "worker-1")


SYSTEMS: tuple[type[Run], ...] = (VigilRun, BullMQRun)  # a pair, in order


def stream_ms(entry_id: bytes) -> int:
    """The milliseconds of a stream entry's id: Redis's clock when the entry was added."""
    return parse_id(entry_id)[0]


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


def run_system(system: type[Run], load: Load, shared: Shared, r: redis.Redis) -> dict[str, Any]:
    run = system(load, shared)
    try:
        result = run.execute(r)
    finally:
        run.close()
    if shared.profile:
        result["profile"] = run.profile_summary()
    return result


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
