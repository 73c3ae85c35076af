"""What the benchmarks sample while a run goes on: CPU seconds and peak RSS per process, the
machine's busy share, Redis used_memory and INFO commandstats."""

from __future__ import annotations

import contextlib
import threading

import psutil
import redis

MIB = 1024 * 1024
SAMPLE_S = 0.5


class Component:
    """One measured process, optionally with its children (nginx workers, Postgres backends)."""

    def __init__(self, name: str, pid: int, children: bool = False) -> None:
        self.name = name
        self.proc = psutil.Process(pid)
        self.children = children
        self.peak_rss = 0
        self.cpu_start: dict[int, float] = {}
        self.cpu_end: dict[int, float] = {}

    def processes(self) -> list[psutil.Process]:
        procs = [self.proc]
        if self.children:
            with contextlib.suppress(psutil.Error):
                procs += self.proc.children(recursive=True)
        return procs

    def cpu(self) -> dict[int, float]:
        seconds = {}
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                seconds[p.pid] = t.user + t.system
        return seconds

    def poll_rss(self) -> None:
        rss = 0
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                rss += p.memory_info().rss
        self.peak_rss = max(self.peak_rss, rss)

    @property
    def cpu_window(self) -> float:
        """CPU seconds between the two samples; a child born inside the window counts whole."""
        return sum(end - self.cpu_start.get(pid, 0.0) for pid, end in self.cpu_end.items())


class RssSampler(threading.Thread):
    """Peak RSS of the components, every 0.5 s until stop()."""

    def __init__(self, components: list[Component]) -> None:
        super().__init__(name="sampler", daemon=True)
        self.components = components
        self.halt = threading.Event()

    def sample(self) -> None:
        for c in list(self.components):
            c.poll_rss()

    def run(self) -> None:
        while True:
            self.sample()
            if self.halt.wait(SAMPLE_S):
                return

    def stop(self) -> None:
        self.halt.set()
        if self.is_alive():
            self.join(5)


class MemorySampler(RssSampler):
    """Peak RSS, and the peak of Redis INFO used_memory over `base_memory` (taken after
    FLUSHALL, before the system started)."""

    def __init__(self, port: int, components: list[Component], base_memory: int) -> None:
        super().__init__(components)
        self.r = redis.Redis(port=port)
        self.base_memory = base_memory
        self.peak_memory = base_memory

    def sample(self) -> None:
        super().sample()
        with contextlib.suppress(redis.RedisError):
            self.peak_memory = max(self.peak_memory, int(self.r.info("memory")["used_memory"]))

    def stop(self) -> None:
        super().stop()
        self.r.close()


def machine_busy() -> tuple[float, float]:
    """(busy CPU seconds, total CPU seconds) over all cores, for the whole machine."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    total = sum(t)
    return total - idle, total


def command_stats(r: redis.Redis) -> dict[str, tuple[int, int]]:
    """Redis INFO commandstats: command -> (calls, microseconds), since the server started."""
    info = r.info("commandstats")
    return {k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
            for k, v in info.items()}


def command_delta(before: dict[str, tuple[int, int]],
                  after: dict[str, tuple[int, int]]) -> dict[str, dict[str, int]]:
    out = {}
    for name, (calls, usec) in after.items():
        c0, u0 = before.get(name, (0, 0))
        if calls > c0:
            out[name] = {"calls": calls - c0, "usec": usec - u0}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["usec"]))
