"""Vigil's pipeline for a benchmark run: what it runs on (a redis-server, the HTTP target,
an embedded Postgres, migrated, and a chDB path, all in one directory), its monitors, what
its Redis streams say (dispatched, consumer groups, drained) and what ClickHouse holds in the
end (vigil.accounting)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from procs import (
    REPO,
    BenchError,
    free_port,
    start_redis,
    start_target,
    stop_process,
    vigil,
    vigil_env,
)
from redis.exceptions import ResponseError

from engine import store
from engine.connections import postgres_pool
from engine.keys import CLICKHOUSE_GROUP, EVALUATOR_GROUP, EXECUTOR_GROUP, STATUS_GROUP, Keys
from engine.secrets import Keyring
from executors.kinds import SCHEMA
from vigil.embedded import EmbeddedPostgres, RedisServer

KEYS = Keys("0")


class Stack:
    """The servers one run needs, started in `workdir`; stop() stops what was started."""

    def __init__(self, workdir: Path, target: str = "python", redis_binary: str | None = None,
                 redis_args: Sequence[str] = (), target_delay_ms: float = 0.0) -> None:
        self.workdir = workdir
        self.target_kind, self.target_delay_ms = target, target_delay_ms
        self.redis_binary, self.redis_args = redis_binary, redis_args
        self.redis: RedisServer | None = None
        self.target: subprocess.Popen[bytes] | None = None
        self.target_port = 0
        self.postgres = EmbeddedPostgres(workdir)
        self.dsn = ""
        self.chdb_url = f"chdb://{workdir / 'chdb'}"
        self.env: dict[str, str] = {}  # what every `vigil` process of the run gets

    def start(self) -> None:
        self.redis = start_redis(self.workdir, self.redis_binary, self.redis_args)
        self.target_port = free_port()
        self.target = start_target(self.workdir, self.target_port, self.target_kind,
                                   self.target_delay_ms)
        self.dsn = self.postgres.start()
        self.env = vigil_env(VIGIL_REDIS_URL=self.redis.url, VIGIL_POSTGRES_DSN=self.dsn,
                             VIGIL_CLICKHOUSE_URL=self.chdb_url)
        done = subprocess.run(vigil("migrate"), env=self.env, cwd=REPO, capture_output=True,
                              text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise BenchError(f"vigil migrate failed: {done.stdout[-1000:]}{done.stderr[-1000:]}")

    @property
    def redis_port(self) -> int:
        assert self.redis is not None
        assert self.redis.port is not None
        return self.redis.port

    @property
    def redis_proc(self) -> subprocess.Popen[bytes]:
        assert self.redis is not None
        assert self.redis.proc is not None
        return self.redis.proc

    @property
    def postgres_pid(self) -> int:
        return int(self.postgres.server.get_pid())

    @property
    def target_url(self) -> str:
        return f"http://127.0.0.1:{self.target_port}/"

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.postgres.stop()
        if self.target is not None:
            with contextlib.suppress(Exception):
                stop_process(self.target)
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.stop()


# --- the load and its monitors ------------------------------------------------------------------

@dataclass(frozen=True)
class Offered:
    """The load a run offers: how many monitors, how often, measured for how long."""

    monitors: int
    interval_s: float
    duration_s: float

    @property
    def interval_ms(self) -> int:
        return int(self.interval_s * 1000)

    @property
    def offered_per_s(self) -> float:
        return self.monitors / self.interval_s


def interval_s(text: str) -> float:
    value = float(text)
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1 s (monitors.interval_ms >= 1000)")
    return value


def add_load_arguments(ap: argparse.ArgumentParser, monitors: int, interval: float,
                       duration: float) -> None:
    """--monitors, --interval and --duration, with these defaults."""
    ap.add_argument("--monitors", type=int, default=monitors)
    ap.add_argument("--interval", type=interval_s, default=interval,
                    help="check interval, s (>= 1)")
    ap.add_argument("--duration", type=float, default=duration, help="measured window, s")



def monitor_ids(n: int) -> list[str]:
    return [f"bench-{i:06d}" for i in range(n)]


def seed_monitors(dsn: str, count: int, interval_ms: int, timeout_ms: int,
                  target_url: str) -> float:
    """Postgres holds exactly the http monitors bench-000000 ... on the target: validated by
    the monitor definition and stored by engine.store.apply in one transaction (with prune, so
    a smaller count deletes the rest). Returns the seconds it took."""
    entries = [{"id": mid, "name": mid, "kind": "http", "interval_ms": interval_ms,
                "timeout_ms": timeout_ms,
                "http": {"url": f"{target_url}{mid}", "method": "GET",
                         "expected_status": [200], "verify_tls": True}}
               for mid in monitor_ids(count)]

    async def apply() -> None:
        monitors = SCHEMA.parse(entries, origin="bench")
        pool = await postgres_pool(dsn)
        try:
            await store.apply(pool, monitors, prune=True, dry_run=False,
                              keyring=Keyring.from_env())
        finally:
            await pool.close()

    started = time.perf_counter()
    asyncio.run(apply())
    return time.perf_counter() - started


# --- what the streams say ------------------------------------------------------------------------

def dispatched(r: redis.Redis) -> int:
    return int(r.hget(KEYS.stats, "dispatched") or 0)


def groups_exist(r: redis.Redis) -> bool:
    try:
        checks = {g["name"].decode() for g in r.xinfo_groups(KEYS.checks("default"))}
        results = {g["name"].decode() for g in r.xinfo_groups(KEYS.results)}
    except ResponseError:
        return False
    return EXECUTOR_GROUP in checks and {CLICKHOUSE_GROUP, STATUS_GROUP} <= results


def drained(r: redis.Redis, stream: str, group: str) -> bool:
    """Nothing pending and the last entry delivered (as tests/e2e/test_pipeline.py)."""
    groups = {g["name"].decode(): g for g in r.xinfo_groups(stream)}
    last = r.xinfo_stream(stream)["last-generated-id"]
    return groups[group]["pending"] == 0 and groups[group]["last-delivered-id"] == last


def all_drained(r: redis.Redis, evaluator: bool = False) -> bool:
    return (drained(r, KEYS.checks("default"), EXECUTOR_GROUP)
            and drained(r, KEYS.results, CLICKHOUSE_GROUP)
            and drained(r, KEYS.results, STATUS_GROUP)
            and (not evaluator or drained(r, KEYS.results, EVALUATOR_GROUP)))


# --- what ClickHouse holds ---------------------------------------------------------------------

def account(chdb_url: str, w0_ms: int, w1_ms: int) -> dict[str, Any]:
    """vigil.accounting in a fresh process: chDB admits one process per data path."""
    done = subprocess.run([sys.executable, "-m", "vigil.accounting", chdb_url, "--window",
                           str(w0_ms), str(w1_ms)], cwd=REPO, capture_output=True, text=True,
                          timeout=600, check=False)
    if done.returncode != 0:
        raise BenchError(f"counting in chDB failed: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))
