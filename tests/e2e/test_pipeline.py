"""The whole pipeline as real OS processes: scheduler, two executors, both sinks and the API.

chDB admits one process per data path, so the ClickHouse sink and the API share one process
(`vigil run sink-clickhouse api`), as in `vigil up`; the final row counts are read by a fresh
process after that one has stopped.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.keys import CLICKHOUSE_GROUP, EXECUTOR_GROUP, STATUS_GROUP
from engine.shards import Layout, shard_of
from tests.support.helpers import free_port, vigil_env, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
UP, DOWN, CLOSED, SLOW = 8, 4, 2, 4
TOTAL = UP + DOWN + CLOSED + SLOW


class Stack:
    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
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


def monitors_file(path: Path, target: str) -> Path:
    entries = [{"id": f"up-{i}", "kind": "http", "interval": "1s", "timeout": "500ms",
                "http": {"url": f"{target}/ok?n={i}"}} for i in range(UP)]
    entries += [{"id": f"down-{i}", "kind": "http", "interval": "1s", "timeout": "500ms",
                 "http": {"url": f"{target}/fail?n={i}"}} for i in range(DOWN)]
    entries += [{"id": f"closed-{i}", "kind": "tcp", "interval": "1s", "timeout": "500ms",
                 "tcp": {"host": "127.0.0.1", "port": 9}} for i in range(CLOSED)]
    # Slow targets time out after 500 ms, so an executor always holds some checks in flight.
    entries += [{"id": f"slow-{i}", "kind": "http", "interval": "1s", "timeout": "500ms",
                 "http": {"url": f"{target}/slow?n={i}"}} for i in range(SLOW)]
    path.write_text(json.dumps({"monitors": entries}))  # JSON is YAML
    return path


def expected(monitor_id: str) -> str:
    return "up" if monitor_id.startswith("up-") else "down"


async def dispatched(r, layout: Layout) -> int:
    return sum([int(await r.hget(keys.stats, "dispatched") or 0) for keys in layout.all])


async def drained(r, stream: str, group: str) -> bool:
    groups = {g["name"].decode(): g for g in await r.xinfo_groups(stream)}
    last = (await r.xinfo_stream(stream))["last-generated-id"]
    return groups[group]["pending"] == 0 and groups[group]["last-delivered-id"] == last


@pytest.fixture
def shards() -> int:
    """VIGIL_SHARDS of the stack (a test parametrizes it)."""
    return 1


@pytest.fixture
async def stack(tmp_path, redis_url, postgres_dsn, pool, r, target, shards):
    await pool.execute("TRUNCATE monitors, monitor_status")
    chdb = f"chdb://{tmp_path / 'chdb'}"
    env = vigil_env(VIGIL_REDIS_URL=redis_url, VIGIL_POSTGRES_DSN=postgres_dsn,
                    VIGIL_CLICKHOUSE_URL=chdb, VIGIL_LOG_FORMAT="json", VIGIL_SHARDS=str(shards),
                    VIGIL_MAX_TIMEOUT_MS="1000", VIGIL_CLAIM_GRACE_MS="500",
                    VIGIL_SINK_FLUSH_MS="100", VIGIL_RECONCILE_S="5")
    s = Stack(tmp_path, env)
    s.chdb = chdb  # type: ignore[attr-defined]
    done = await asyncio.to_thread(s.command, "migrate")
    assert done.returncode == 0, done.stderr
    applied = await asyncio.to_thread(
        s.command, "monitors", "apply", "-f", str(monitors_file(tmp_path / "m.yaml", target)))
    assert applied.returncode == 0, applied.stderr
    assert f"{TOTAL} created" in applied.stdout
    yield s
    s.close()


async def run_pipeline(stack: Stack, r, pool, layout: Layout, kill_one: bool) -> None:
    port = free_port()
    stack.start("scheduler", "scheduler")
    stack.start("executor-a", "executor")
    stack.start("executor-b", "executor")
    stack.start("sink-status", "sink", "status")
    stack.start("ch-api", "run", "sink-clickhouse", "api", "--port", str(port))
    api = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:

        async def statuses_right() -> bool:
            try:
                async with http.get(f"{api}/api/v1/status") as resp:
                    body = await resp.json()
            except aiohttp.ClientError:
                return False
            return all(m["status"] == expected(m["id"]) for m in body["monitors"])

        await wait_for(statuses_right, timeout=30, every=0.25)
        if kill_one:

            async def holds_work() -> bool:
                return any([await r.xpending_range(keys.checks("default"), EXECUTOR_GROUP, "-",
                                                   "+", 10, consumername="executor-a")
                            for keys in layout.all])

            await wait_for(holds_work, timeout=10, every=0.01)
            assert stack.stop("executor-a", signal.SIGKILL) == -signal.SIGKILL

        async def several_intervals() -> bool:
            return await dispatched(r, layout) >= 5 * TOTAL

        await wait_for(several_intervals, timeout=30, every=0.25)

        async def uptime(monitor_id: str) -> dict[str, Any]:
            async with http.get(f"{api}/api/v1/monitors/{monitor_id}/uptime?window=1h") as resp:
                body: dict[str, Any] = await resp.json()
                return body

        async def both_counted() -> bool:
            return (await uptime("up-0"))["up"] > 0 and (await uptime("down-0"))["down"] > 0

        await wait_for(both_counted, timeout=30, every=0.25)
        down0 = await uptime("down-0")
        async with http.get(f"{api}/health") as resp:
            assert resp.status == 200
    assert down0["up"] == 0
    assert down0["uptime_percent"] == 0.0
    assert stack.stop("scheduler") == 0
    total = await dispatched(r, layout)

    async def all_done() -> bool:
        return all([await drained(r, keys.checks("default"), EXECUTOR_GROUP)
                    and await drained(r, keys.results, CLICKHOUSE_GROUP)
                    and await drained(r, keys.results, STATUS_GROUP) for keys in layout.all])

    await wait_for(all_done, timeout=30, every=0.25)
    if kill_one:
        assert "claimed stalled check" in stack.log("executor-b")
    for name in list(stack.procs):
        assert stack.stop(name) == 0, stack.log(name)[-2000:]
    counted = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "vigil.accounting", stack.chdb],  # type: ignore[attr-defined]
        capture_output=True, text=True, timeout=60, check=True)
    counts = json.loads(counted.stdout)
    # Invariant 1: one row per dispatched check, each check id once.
    assert counts["rows"] == total, counts
    assert counts["unique"] == total, counts
    assert counts["duplicate_ids"] == 0
    assert sum([await r.xlen(keys.results) for keys in layout.all]) <= total
    status = {row["monitor_id"]: row["status"] for row in await pool.fetch(
        "SELECT monitor_id, status FROM monitor_status")}
    assert status == {mid: expected(mid) for mid in status}
    assert len(status) == TOTAL


async def test_pipeline_accounts_for_every_check(stack, r, pool, keys):
    await run_pipeline(stack, r, pool, Layout.single(keys), kill_one=False)


@pytest.mark.parametrize("shards", [1, 3])
async def test_pipeline_survives_an_executor_killed_mid_run(stack, r, pool, shards):
    """Over three shards too: every role serves all three, and the monitors are spread."""
    layout = Layout.of(shards, [str(i) for i in range(shards)])
    if shards > 1:
        assert len({shard_of(f"up-{i}", shards) for i in range(UP)}) == shards
    await run_pipeline(stack, r, pool, layout, kill_one=True)
