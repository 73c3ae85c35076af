"""A real `vigil executor` SIGKILLed and restarted under the same name (compose service names,
StatefulSets, VIGIL_INSTANCE_ID): its pending checks run once more, not again and again, and
a check that keeps killing executors ends as an `error` result and a dead letter."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from engine.events import CheckResult
from engine.keys import EXECUTOR_GROUP, RESULT_GROUPS
from engine.streams import EVENT_FIELD, ensure_group, event_of
from tests.support.helpers import reaped, vigil_env, wait_for
from tests.support.kind_executor import check_due
from tests.support.servers import serve_app

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
NAME = "exec-stable"


class Target:
    """Counts the requests per path; /slow answers after a second, /hang never in time."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.app = web.Application()
        self.app.router.add_get("/{kind}/{name}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen[request.match_info["name"]] += 1
        await asyncio.sleep(1.0 if request.match_info["kind"] == "slow" else 60)
        return web.Response(text="ok")


@contextlib.contextmanager
def executor(redis_url: str, log: Path, name: str = NAME,
             **env: str) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "vigil.cli", "executor"],
                                env=vigil_env(VIGIL_REDIS_URL=redis_url, VIGIL_INSTANCE_ID=name,
                                              **env), stdout=out, stderr=out)
    with reaped(proc):
        yield proc


async def results(r, keys) -> list[CheckResult]:
    return [CheckResult.from_json(event_of(f)) for _, f in await r.xrange(keys.results)]


async def enqueue(r, keys, base: str, names: list[str], kind: str) -> None:
    stream = keys.checks("default")
    await ensure_group(r, stream, EXECUTOR_GROUP)
    for group in RESULT_GROUPS:
        await ensure_group(r, keys.results, group)
    for name in names:
        due = check_due(name, "http", {"url": f"{base}/{kind}/{name}"}, timeout_ms=5_000,
                        interval_ms=600_000)
        await r.xadd(stream, {EVENT_FIELD: due.to_json()})


async def test_a_restart_runs_each_pending_check_once_more(r, keys, redis_url, tmp_path):
    target = Target()
    names = [f"m{i}" for i in range(20)]
    async with serve_app(target.app) as base:
        await enqueue(r, keys, base, names, "slow")
        with executor(redis_url, tmp_path / "executor.log") as first:

            async def all_running() -> bool:
                return len(target.seen) == len(names)

            await wait_for(all_running)
            first.send_signal(signal.SIGKILL)
        with executor(redis_url, tmp_path / "executor.log") as second:

            async def all_done() -> bool:
                return len(await results(r, keys)) >= len(names)

            await wait_for(all_done, timeout=30)
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0
    got = await results(r, keys)
    assert sorted(res.monitor_id for res in got) == sorted(names)
    assert all(res.outcome == "up" for res in got)
    # Once before the kill, once after: never more.
    assert max(target.seen.values()) == 2, target.seen
    assert {res.deliveries for res in got} == {2}


async def test_a_check_that_keeps_killing_executors_is_dead_lettered(r, keys, redis_url,
                                                                     tmp_path):
    target = Target()
    async with serve_app(target.app) as base:
        await enqueue(r, keys, base, ["poison"], "hang")
        for attempt in (1, 2):
            with executor(redis_url, tmp_path / "executor.log",
                          VIGIL_MAX_DELIVERIES="2") as proc:

                async def running(attempt: int = attempt) -> bool:
                    return target.seen["poison"] == attempt

                await wait_for(running)
                proc.send_signal(signal.SIGKILL)  # the check "crashes" its executor
        with executor(redis_url, tmp_path / "executor.log", VIGIL_MAX_DELIVERIES="2") as proc:

            async def ended() -> bool:
                return len(await results(r, keys)) == 1

            await wait_for(ended, timeout=30)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    [result] = await results(r, keys)
    assert (result.outcome, result.error_kind, result.deliveries) == ("error", "max_deliveries", 3)
    assert target.seen["poison"] == 2  # the third delivery never reached the target
    [(_, letter)] = await r.xrange(keys.deadletter)
    assert b"max_deliveries is 2" in letter[b"reason"]


async def test_an_executor_stopped_past_the_claim_time_and_resumed_writes_no_second_result(
        r, keys, redis_url, tmp_path):
    """SIGSTOP with checks in flight: a peer claims them after max timeout + grace and runs
    them; SIGCONT: the first finishes too, and every check still has exactly one result."""
    target = Target()
    names = [f"s{i}" for i in range(10)]
    quick = {"VIGIL_MAX_TIMEOUT_MS": "2000", "VIGIL_CLAIM_GRACE_MS": "500"}
    async with serve_app(target.app) as base:
        await enqueue(r, keys, base, names, "slow")
        with executor(redis_url, tmp_path / "stalled.log", **quick) as stalled:

            async def all_running() -> bool:
                return len(target.seen) == len(names)

            await wait_for(all_running)
            stalled.send_signal(signal.SIGSTOP)
            with executor(redis_url, tmp_path / "peer.log", "exec-peer", **quick) as peer:

                async def claimed_and_done() -> bool:
                    return len(await results(r, keys)) == len(names)

                await wait_for(claimed_and_done, timeout=30)
                stalled.send_signal(signal.SIGCONT)

                async def stalled_runs_finished() -> bool:
                    return sum(target.seen.values()) == 2 * len(names)

                await wait_for(stalled_runs_finished, timeout=30)
                stalled.send_signal(signal.SIGTERM)
                peer.send_signal(signal.SIGTERM)
                assert (stalled.wait(30), peer.wait(30)) == (0, 0)
    got = Counter(res.check_id for res in await results(r, keys))
    assert len(got) == len(names)
    assert set(got.values()) == {1}
