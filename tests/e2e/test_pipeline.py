"""The whole pipeline as real OS processes on one Redis: scheduler, two executors, both sinks
and the API (tests.support.pipeline: the stack, its monitors and the accounting)."""

from __future__ import annotations

import signal
from typing import Any

import aiohttp
import pytest

from engine.keys import CLICKHOUSE_GROUP, EXECUTOR_GROUP, STATUS_GROUP
from engine.shards import Layout, shard_of
from tests.support.helpers import free_port, wait_for
from tests.support.pipeline import (
    CLOSED,
    DOWN,
    SLOW,
    UP,
    Stack,
    dispatched,
    drained,
    expected,
    monitors_file,
    stack_env,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
TOTAL = UP + DOWN + CLOSED + SLOW


@pytest.fixture
def shards() -> int:
    """VIGIL_SHARDS of the stack (a test parametrizes it)."""
    return 1


@pytest.fixture
async def stack(tmp_path, redis_url, postgres_dsn, pool, r, target, shards):
    await pool.execute("TRUNCATE monitors, monitor_status")
    s = Stack(tmp_path, stack_env(tmp_path, redis_url, postgres_dsn, shards))
    await s.prepare(monitors_file(tmp_path / "m.yaml", target), TOTAL)
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
    counts = await stack.accounting()
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
