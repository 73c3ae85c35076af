"""`vigil queue ...` as an operator runs it, a real process on real servers: beside a running
`vigil up` (found through the data directory) it shows the streams and the executor, pauses
dispatch (the scheduler inside `vigil up` holds every check, the slots counted `held`) and
resumes it; on a Redis given by --redis-url it lists, retries and purges dead letters and
says why the queue is not healthy, with exit status 1."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from engine.keys import EXECUTOR_GROUP, Keys
from engine.streams import EVENT_FIELD, Consumer, DeadLetters, ensure_group, event_of
from tests.support.helpers import free_port, vigil_env, wait_for
from tests.support.up import interrupt, vigil_up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def vigil(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A command as typed in another terminal: no VIGIL_ variable, from `cwd`."""
    return subprocess.run([sys.executable, "-m", "vigil.cli", *args], env=vigil_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


async def queue(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(vigil, cwd, "queue", *args)


async def stats(cwd: Path, *flags: str) -> Any:
    done = await queue(cwd, "stats", "--json", *flags)
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


async def test_pause_and_resume_beside_vigil_up(home: Path) -> None:
    data = ["--data-dir", str(home / "data")]
    fast = home / "fast.yaml"
    fast.write_text("monitors:\n  - id: fast\n    kind: tcp\n    interval: 1s\n"
                    "    tcp: {host: 127.0.0.1, port: 9}\n")
    async with vigil_up(home, free_port()) as proc:
        applied = await asyncio.to_thread(vigil, home, "monitors", "apply", "-f", str(fast),
                                          *data)
        assert applied.returncode == 0, applied.stderr

        async def dispatching() -> bool:
            figures = await stats(home, *data)
            return figures["dispatch"].get("dispatched", 0) > 0 and any(
                e["alive"] and e["concurrency"] for e in figures["executors"].get("default", []))

        await wait_for(dispatching, timeout=60, every=0.5)
        shown = await queue(home, "stats", *data)
        assert shown.returncode == 0, shown.stderr
        assert "checks:default" in shown.stdout
        assert "dispatch: running" in shown.stdout

        paused = await queue(home, "pause", *data)
        assert paused.returncode == 0, paused.stderr
        assert "dispatch paused: every region since" in paused.stdout
        before = (await stats(home, *data))["dispatch"]

        async def held_twice() -> bool:
            return (await stats(home, *data))["dispatch"].get("held", 0) >= 2

        await wait_for(held_twice, timeout=30, every=0.5)
        during = (await stats(home, *data))["dispatch"]
        # A dispatch call is one script: every one after the pause returned sent nothing.
        assert during["dispatched"] == before["dispatched"]

        resumed = await queue(home, "resume", *data)
        assert (resumed.returncode, resumed.stdout.strip()) == (0, "dispatch: running")

        async def dispatching_again() -> bool:
            return (await stats(home, *data))["dispatch"]["dispatched"] > during["dispatched"]

        await wait_for(dispatching_again, timeout=30, every=0.5)
        await interrupt(proc)


async def test_dead_letters_and_health_on_a_given_redis(home: Path, redis_url: str,
                                                        r: aioredis.Redis) -> None:
    keys = Keys()
    given = ["--redis-url", redis_url]
    checks = keys.checks("nowhere")
    await ensure_group(r, checks, EXECUTOR_GROUP)
    dead = DeadLetters(r, keys.deadletter)
    for i in range(3):
        await dead.add(checks, f"1-{i}".encode(), f'{{"n":{i}}}'.encode(), f"broken {i}")
    first, second, _ = [d.id for d in await dead.page(3)]

    listed = await queue(home, "dead-letters", "list", "--limit", "2", *given)
    assert listed.returncode == 0, listed.stderr
    assert "2 of 3 dead letters" in listed.stdout
    assert f"{first}  from {checks} 1-0" in listed.stdout
    assert 'reason: broken 0\n  payload: {"n":0}' in listed.stdout
    assert f"next page: --after {second}" in listed.stdout

    retried = await queue(home, "dead-letters", "retry", first, *given)
    assert (retried.returncode, retried.stdout.strip()) == (
        0, "1 dead letter(s) put back on their stream")
    again = await queue(home, "dead-letters", "retry", first, *given)
    assert (again.returncode, again.stderr.strip()) == (1, f"vigil: no dead letter {first}")
    purged = await queue(home, "dead-letters", "purge", second, *given)
    assert (purged.returncode, purged.stdout.strip()) == (0, f"dead letter {second} purged")
    everything = await queue(home, "dead-letters", "retry", "--all", *given)
    assert everything.stdout.strip() == "1 dead letter(s) put back on their stream"
    assert [event_of(d.fields) for d in await Consumer(r, checks, EXECUTOR_GROUP,
                                                       "exec").read_new(10)] == [
        b'{"n":0}', b'{"n":2}']
    await dead.add(checks, b"1-9", b"{}", "again")
    assert (await queue(home, "dead-letters", "purge", *given)).stdout.strip() == (
        "1 dead letter(s) purged")

    # A plan names the region, nothing serves it and a check waits there: not healthy, and
    # it says why.
    await r.sadd(keys.regions, "nowhere")
    await r.xadd(checks, {EVENT_FIELD: "due"})
    health = await queue(home, "health", *given)
    assert health.returncode == 1
    assert "problem: region 'nowhere': checks are waiting and no executor is alive" in (
        health.stdout)
    assert health.stderr.strip() == "vigil: the queue is not healthy: 1 problem(s)"
    bad = await queue(home, "dead-letters", "retry", "nope", *given)
    assert bad.returncode == 2
    assert "'nope' is not a dead letter's id" in bad.stderr
