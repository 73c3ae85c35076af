"""The end-to-end pipeline's parts, shared by the tests that run it on one Redis
(tests/e2e/test_pipeline.py) and on a Redis Cluster (tests/e2e/test_cluster_pipeline.py):
real `vigil` role processes, the monitors they check, and the figures the accounting reads
from Redis and ClickHouse.

chDB admits one process per data path, so the ClickHouse sink and the API share one process
(`vigil run sink-clickhouse api`), as in `vigil up`; the final rows are read by a fresh process
(`python -m vigil.accounting`, or this module for the rows themselves) after that one stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from engine.clickhouse import ClickHouse
from engine.shards import Layout
from tests.support.helpers import repo_root, vigil_env

UP, DOWN, CLOSED, SLOW = 8, 4, 2, 4


class Stack:
    """`vigil` commands and role processes on one environment, each role logging to a file of
    the work dir; every process still running is killed by close()."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.chdb = env["VIGIL_CLICKHOUSE_URL"]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vigil.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=60, check=False)

    def start(self, name: str, *args: str) -> None:
        with (self.workdir / f"{name}.log").open("wb") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "vigil.cli", *args],
                env={**self.env, "VIGIL_INSTANCE_ID": name}, stdout=log, stderr=log)

    def stop(self, name: str, sig: int = signal.SIGTERM) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        return proc.wait(30)

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text()

    def close(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait()

    async def prepare(self, monitors: Path, count: int) -> None:
        """Migrated databases and `count` monitors applied from the file `monitors`."""
        done = await asyncio.to_thread(self.command, "migrate")
        assert done.returncode == 0, done.stderr
        applied = await asyncio.to_thread(self.command, "monitors", "apply", "-f", str(monitors))
        assert applied.returncode == 0, applied.stderr
        assert f"{count} created" in applied.stdout

    async def accounting(self) -> dict[str, Any]:
        """vigil.accounting's totals of ClickHouse (rows, unique ids, duplicates)."""
        return await self._read("vigil.accounting")

    async def rows(self) -> list[list[Any]]:
        """Every check's row after FINAL: [check_id, monitor_id, scheduled_ms] (main below)."""
        rows: list[list[Any]] = await self._read("tests.support.pipeline")
        return rows

    async def _read(self, module: str) -> Any:
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", module, self.chdb], cwd=repo_root(),
            capture_output=True, text=True, timeout=60, check=True)
        return json.loads(done.stdout)


def stack_env(workdir: Path, redis_url: str, postgres_dsn: str, shards: int) -> dict[str, str]:
    """The roles' environment: short timeouts and claims, so a killed part is felt and its
    work taken over within seconds."""
    return vigil_env(VIGIL_REDIS_URL=redis_url, VIGIL_POSTGRES_DSN=postgres_dsn,
                     VIGIL_CLICKHOUSE_URL=f"chdb://{workdir / 'chdb'}", VIGIL_LOG_FORMAT="json",
                     VIGIL_SHARDS=str(shards), VIGIL_MAX_TIMEOUT_MS="1000",
                     VIGIL_CLAIM_GRACE_MS="500", VIGIL_SINK_FLUSH_MS="100",
                     VIGIL_RECONCILE_S="5")


def monitors_file(path: Path, target: str, up: int = UP, down: int = DOWN, closed: int = CLOSED,
                  slow: int = SLOW) -> Path:
    """Monitors checked every second: `up` answer 200, `down` 500, `closed` a closed TCP
    port and `slow` time out."""
    entries = [{"id": f"up-{i}", "kind": "http", "interval": "1s", "timeout": "500ms",
                "http": {"url": f"{target}/ok?n={i}"}} for i in range(up)]
    entries += [{"id": f"down-{i}", "kind": "http", "interval": "1s", "timeout": "500ms",
                 "http": {"url": f"{target}/fail?n={i}"}} for i in range(down)]
    entries += [{"id": f"closed-{i}", "kind": "tcp", "interval": "1s", "timeout": "500ms",
                 "tcp": {"host": "127.0.0.1", "port": 9}} for i in range(closed)]
    # Slow targets time out after 500 ms, so an executor always holds some checks in flight.
    entries += [{"id": f"slow-{i}", "kind": "http", "interval": "1s", "timeout": "500ms",
                 "http": {"url": f"{target}/slow?n={i}"}} for i in range(slow)]
    path.write_text(json.dumps({"monitors": entries}))  # JSON is YAML
    return path


def expected(monitor_id: str) -> str:
    return "up" if monitor_id.startswith("up-") else "down"


async def dispatched(r: aioredis.Redis, layout: Layout) -> int:
    """What the scheduler counted in Redis (each shard's stats hash), summed over shards."""
    return sum([int(await r.hget(keys.stats, "dispatched") or 0) for keys in layout.all])


async def drained(r: aioredis.Redis, stream: str, group: str) -> bool:
    """`group` has read everything `stream` was given and acknowledged it."""
    groups = {g["name"].decode(): g for g in await r.xinfo_groups(stream)}
    last = (await r.xinfo_stream(stream))["last-generated-id"]
    return bool(groups[group]["pending"] == 0 and groups[group]["last-delivered-id"] == last)


async def _rows(url: str) -> list[list[Any]]:
    ch = ClickHouse.from_url(url)
    try:
        rows = await ch.rows("SELECT check_id, monitor_id, toUnixTimestamp64Milli(scheduled) "
                             "FROM check_results FINAL")
        return [[str(c), str(m), int(s)] for c, m, s in rows]
    finally:
        await ch.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.support.pipeline",
                                 description="print every check_results row after FINAL as "
                                             "JSON [check_id, monitor_id, scheduled_ms]")
    ap.add_argument("url", help="ClickHouse URL: chdb:///path or http(s)://...")
    print(json.dumps(asyncio.run(_rows(ap.parse_args(argv).url))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
