"""A real `vigil evaluator` SIGKILLed mid-run, again and again, and restarted under its name,
while a real scheduler and executor check targets that go down and up every few seconds:
every transition gives exactly one event, the same events a single uninterrupted evaluation
of the same results gives (evaluator.state over the results stream, per monitor in
scheduled order)."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from aiohttp import web

from engine.events import CheckResult, Event
from engine.keys import EVALUATOR_GROUP
from engine.rules import Rules
from engine.streams import EVENT_FIELD, event_of
from evaluator.state import MonitorState, evaluate
from executors.kinds import SCHEMA
from tests.support.helpers import reaped, store_monitors, vigil_env, wait_for
from tests.support.servers import serve_app

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
MONITORS = 12
KILLS = 4


def flipping_target() -> web.Application:
    """/flip/N answers 200 or 500, changing every N seconds."""
    async def flip(request: web.Request) -> web.Response:
        period = int(request.match_info["period"])
        return web.Response(status=200 if int(time.time() / period) % 2 else 500)

    app = web.Application()
    app.router.add_get("/flip/{period}", flip)
    return app


def role(name: str, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "vigil.cli", name],
                                env=vigil_env(**env), stdout=out, stderr=out)


async def test_every_transition_is_one_event_across_evaluator_kills(
        r, keys, pool, clean, redis_url, postgres_dsn, tmp_path):
    env = {"VIGIL_REDIS_URL": redis_url, "VIGIL_POSTGRES_DSN": postgres_dsn}
    async with serve_app(flipping_target()) as base:
        definitions = [{"id": f"flip{i}", "kind": "http", "interval": "1s", "timeout": "500ms",
                        "http": {"url": f"{base}/flip/{2 + i % 3}"},
                        "alerting": {"confirm_down": 2, "confirm_up": 1}}
                       for i in range(MONITORS)]
        monitors = SCHEMA.parse(definitions)
        await store_monitors(pool, monitors, source="file")
        scheduler = role("scheduler", tmp_path / "scheduler.log", env)
        executor = role("executor", tmp_path / "executor.log", env)
        with reaped(scheduler), reaped(executor):
            evaluator_env = {**env, "VIGIL_INSTANCE_ID": "evaluator-1"}
            rng = random.Random(7)
            for _ in range(KILLS):
                with reaped(role("evaluator", tmp_path / "evaluator.log", evaluator_env)) as ev:
                    seen = await r.xlen(keys.events) if await r.exists(keys.events) else 0

                    async def moved(before: int = seen) -> bool:
                        return bool(await r.exists(keys.events)) and (
                            await r.xlen(keys.events) > before + 5)
                    await wait_for(moved, timeout=60)
                    await asyncio.sleep(rng.uniform(0, 1))  # mid-batch, somewhere
                    ev.kill()
                    ev.wait()
            with reaped(role("evaluator", tmp_path / "evaluator.log", evaluator_env)) as ev:
                # The last run lasts a while too; then no more checks, and it catches up.
                await asyncio.sleep(3)
                for proc in (scheduler, executor):
                    proc.terminate()
                    await asyncio.to_thread(proc.wait, 30)

                async def drained() -> bool:
                    info = {g["name"].decode(): g for g in await r.xinfo_groups(keys.results)}
                    last = (await r.xinfo_stream(keys.results))["last-generated-id"]
                    group = info[EVALUATOR_GROUP]
                    return group["pending"] == 0 and group["last-delivered-id"] == last
                await wait_for(drained, timeout=60)
                ev.terminate()
                await asyncio.to_thread(ev.wait, 30)
    live = [Event.from_json(f[EVENT_FIELD]) for _, f in await r.xrange(keys.events)]
    counts = Counter(e.id for e in live)
    assert [i for i, n in counts.items() if n > 1] == []
    # The same results evaluated once, without interruption, per monitor in scheduled order.
    results: dict[str, list[CheckResult]] = defaultdict(list)
    for _, fields in await r.xrange(keys.results):
        result = CheckResult.from_json(event_of(fields))
        results[result.monitor_id].append(result)
    expected: list[Event] = []
    for monitor in monitors:
        rules = Rules.of_row({"interval_ms": monitor.interval_ms,
                              "timeout_ms": monitor.timeout_ms, "regions": monitor.regions,
                              "alerting": monitor.alerting.model_dump()})
        state = MonitorState()
        for result in sorted(results[monitor.id], key=lambda res: res.scheduled_ms):
            expected += evaluate(monitor.id, state, rules, result).events
    # Once the checks stopped, the regions went silent: staleness after the last result is
    # the only thing the live run may add.
    last = {mid: max(res.scheduled_ms for res in rs) for mid, rs in results.items()}
    assert [e.id for e in live if e.id.endswith(":stale") and e.at_ms < last[e.monitor_id]] == []
    assert sorted(e.id for e in live if not e.id.endswith(":stale")) == sorted(
        e.id for e in expected)
    assert sum(e.type == "incident.opened" for e in live) >= MONITORS
