"""Executors above their limits on a real redis-server: critical checks first and the rest
`expired` under overload, VIGIL_MAX_PER_HOST, and the VIGIL_MAX_CHECKS_PER_MINUTE ceiling
shared by two executors. Every entry gets exactly one result, whatever was held back."""

from __future__ import annotations

import math
import os
import resource
import time
from collections import Counter

import pytest
from structlog.testing import capture_logs

from engine.clock import redis_ms
from engine.connections import redis_client
from engine.events import CheckDue, CheckResult
from engine.exporter import Exporter
from engine.keys import EXECUTOR_GROUP, Keys
from engine.settings import Settings
from engine.shards import Layout
from engine.streams import EVENT_FIELD, ensure_group, event_of
from executors import admission
from executors.ceiling import Ceiling
from executors.service import OPEN_FILES, Executor, open_files_for
from tests.support.helpers import free_port, running, wait_for
from tests.support.kind_executor import check_due
from tests.support.redis_cluster import LocalCluster, cluster
from tests.support.servers import Gate, serve_app
from vigil.roles import _services

__all__ = ["cluster"]  # the fixture, imported for pytest to find


def settings(instance_id: str, **env: str) -> Settings:
    """Settings as an executor reads them from its environment."""
    return Settings.from_env({"VIGIL_INSTANCE_ID": instance_id, "VIGIL_MAX_TIMEOUT_MS": "10000",
                              **env})


async def put(r, keys: Keys, dues: list[CheckDue]) -> None:
    stream = keys.checks("default")
    await ensure_group(r, stream, EXECUTOR_GROUP)
    for due in dues:
        await r.xadd(stream, {EVENT_FIELD: due.to_json()})


def http(monitor_id: str, base: str, *, deadline_in_ms: int, critical: bool = False,
         scheduled_ms: int | None = None) -> CheckDue:
    """Scheduled now unless told otherwise, due `deadline_in_ms` after its slot."""
    spec = {"url": f"{base}/{monitor_id}", **({"critical": True} if critical else {})}
    return check_due(monitor_id, "http", spec, timeout_ms=10_000, interval_ms=deadline_in_ms,
                     scheduled_ms=scheduled_ms)


async def results(r, keys: Keys) -> dict[str, CheckResult]:
    """Every result by monitor, failing on a second result for one check."""
    out: dict[str, CheckResult] = {}
    for _, fields in await r.xrange(keys.results):
        result = CheckResult.from_json(event_of(fields))
        assert result.monitor_id not in out, "two results for one check"
        out[result.monitor_id] = result
    return out


async def written(r, keys: Keys, count: int) -> None:
    async def enough() -> bool:
        return await r.xlen(keys.results) >= count

    await wait_for(enough, timeout=20)


async def pending(r, keys: Keys) -> int:
    return int((await r.xpending(keys.checks("default"), EXECUTOR_GROUP))["pending"])


async def test_overload_runs_critical_checks_first_and_expires_the_rest(r, keys):
    """Two workers, ten checks held long by their target: the two critical ones, behind two
    others in the stream, take the workers; the rest wait past their deadline and end
    `expired` without reaching the target."""
    gate = Gate()
    normal = [f"n{i}" for i in range(8)]
    async with serve_app(gate.app()) as base:
        dues = [http(m, base, deadline_in_ms=1_500) for m in normal[:2]]
        dues += [http(m, base, deadline_in_ms=60_000, critical=True) for m in ("c0", "c1")]
        dues += [http(m, base, deadline_in_ms=1_500) for m in normal[2:]]
        await put(r, keys, dues)
        last_deadline = max(d.deadline_ms for d in dues if not d.critical)
        async with running(Executor(r, keys, settings("exec-over", VIGIL_CONCURRENCY="2"))):

            async def both_held() -> bool:
                return gate.holding == 2

            async def normal_deadlines_passed() -> bool:
                return await redis_ms(r) > last_deadline

            await wait_for(both_held)
            await wait_for(normal_deadlines_passed)
            gate.let_through(len(dues))
            await written(r, keys, len(dues))
        got = await results(r, keys)
    assert sorted(gate.seen) == ["/c0", "/c1"]
    assert (got["c0"].outcome, got["c1"].outcome) == ("up", "up")
    assert {m: got[m].outcome for m in normal} == dict.fromkeys(normal, "expired")
    assert all("past its deadline" in (got[m].error or "") for m in normal)
    assert await pending(r, keys) == 0


async def test_an_executor_behind_sheds_late_checks_and_runs_fresh_ones(r, keys, monkeypatch):
    """A backlog of checks five seconds late (their deadlines a minute away): once every
    start for a window was late (the window made zero here, so two late starts are enough)
    the executor expires the late ones without a request, naming VIGIL_LAG_TARGET_MS, except
    critical monitors' checks; the first check that starts on time ends it. Before, every
    check ran, each later than the last."""
    monkeypatch.setattr(admission, "WINDOW_S", 0.0)
    gate = Gate()
    gate.let_through(100)
    stale = [f"s{i}" for i in range(8)]
    async with serve_app(gate.app()) as base:
        late = int(time.time() * 1000) - 5_000
        dues = [http("c0", base, deadline_in_ms=60_000, critical=True, scheduled_ms=late)]
        dues += [http(m, base, deadline_in_ms=60_000, scheduled_ms=late) for m in stale]
        dues += [http("c1", base, deadline_in_ms=60_000, critical=True, scheduled_ms=late),
                 http("f0", base, deadline_in_ms=60_000)]
        await put(r, keys, dues)
        async with running(Executor(r, keys, settings("exec-behind", VIGIL_CONCURRENCY="1"))):
            await written(r, keys, len(dues))
        got = await results(r, keys)
    shed = {m for m, result in got.items() if result.outcome == "expired"}
    assert shed == set(stale[1:])
    assert all("VIGIL_LAG_TARGET_MS 1000" in (got[m].error or "") for m in shed)
    assert sorted(gate.seen) == ["/c0", "/c1", "/f0", "/s0"]
    assert await pending(r, keys) == 0


async def test_per_host_limit_holds_one_host_and_not_another(r, keys):
    """VIGIL_MAX_PER_HOST=2: six checks of a held host reach it two at a time, while the four
    of another host run meanwhile."""
    held, other = Gate(), Gate()
    other.let_through(100)
    async with serve_app(held.app()) as slow, serve_app(other.app(), "127.0.0.2") as fast:
        dues = [http(f"a{i}", slow, deadline_in_ms=60_000) for i in range(6)]
        dues += [http(f"b{i}", fast, deadline_in_ms=60_000) for i in range(4)]
        await put(r, keys, dues)
        executor = Executor(r, keys, settings("exec-host", VIGIL_CONCURRENCY="8",
                                              VIGIL_MAX_PER_HOST="2"))
        async with running(executor):

            async def two_held() -> bool:
                return held.holding == 2

            await wait_for(two_held)
            await written(r, keys, 4)  # the other host's, while two of the first are held
            assert sorted(await results(r, keys)) == ["b0", "b1", "b2", "b3"]
            assert (held.holding, held.most) == (2, 2)
            held.let_through(6)
            await written(r, keys, len(dues))
        got = await results(r, keys)
    assert held.most == 2
    assert other.most <= 2  # the limit is each host's
    assert {g.outcome for g in got.values()} == {"up"}
    assert len(got) == len(dues)
    assert await pending(r, keys) == 0


@pytest.fixture
def few_open_files():
    """This process holds 200 files more than it did (as `vigil up` holds its other roles'
    and chDB's) and may open 40 more (its soft RLIMIT_NOFILE, as a system that starts
    processes at 1024 would give a busy one); put back after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(200)]
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir(OPEN_FILES)) + 40, hard))
    yield hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    for fd in held:
        os.close(fd)


async def test_concurrency_past_the_open_files_limit_raises_it(r, keys, few_open_files):
    """64 checks held at once by their target, each a socket at both ends in this process,
    past a soft limit of 40 more files than it holds: the executor raises the soft limit to
    the hard one when it starts, and every check is up. Before, the checks past it failed to
    connect (EMFILE, "Too many open files") and were recorded down: false alarms; and a soft
    limit above the concurrency was left as it was however many files the process held
    (CI's suite held enough that it was)."""
    gate = Gate()
    count = 64
    async with serve_app(gate.app()) as base:
        await put(r, keys, [http(f"m{i}", base, deadline_in_ms=60_000) for i in range(count)])
        with capture_logs() as logs:
            async with running(Executor(r, keys, settings("exec-files",
                                                          VIGIL_CONCURRENCY=str(count)))):

                async def all_held_or_some_failed() -> bool:
                    return gate.holding == count or await r.xlen(keys.results) > 0

                await wait_for(all_held_or_some_failed)
                gate.let_through(count)
                await written(r, keys, count)
        got = await results(r, keys)
    assert Counter(g.outcome for g in got.values()) == {"up": count}, \
        {g.error for g in got.values()}
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == few_open_files
    assert [e["event"] for e in logs if e["event"].startswith("open files")] == [
        "open files limit raised"]


def test_a_concurrency_past_the_hard_open_files_limit_is_one_warning(few_open_files):
    """A hard limit no process may pass short of VIGIL_CONCURRENCY: the soft limit is raised
    as far as it goes, and one warning names the setting."""
    with capture_logs() as logs:
        open_files_for(few_open_files)
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == few_open_files
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [(e["concurrency"], e["open_files_limit"]) for e in warnings] == [
        (few_open_files, few_open_files)]
    assert "VIGIL_CONCURRENCY" in warnings[0]["event"]


async def test_ceiling_holds_two_executors_together(r, keys):
    """60 a minute is one token a second after a burst of one: two executors sharing the
    ceiling start no more checks than it granted since the test began, and every other
    check ends `expired`, naming the ceiling, with exactly one result each."""
    gate = Gate()
    gate.let_through(100)
    count = 20
    env = {"VIGIL_CONCURRENCY": "4", "VIGIL_MAX_CHECKS_PER_MINUTE": "60"}
    async with serve_app(gate.app()) as base:
        await put(r, keys, [http(f"m{i}", base, deadline_in_ms=1_500) for i in range(count)])
        began = await redis_ms(r)
        async with running(Executor(r, keys, settings("exec-c1", **env))), \
                running(Executor(r, keys, settings("exec-c2", **env))):
            await written(r, keys, count)
        ended = await redis_ms(r)
        got = await results(r, keys)
    ran = [g for g in got.values() if g.outcome == "up"]
    granted_at_most = 1 + math.floor((ended - began) / 1000)  # the burst, then one a second
    assert 1 <= len(ran) <= granted_at_most
    assert len(gate.seen) == len(ran)
    rest = [g for g in got.values() if g.outcome != "up"]
    assert {g.outcome for g in rest} == {"expired"}
    assert all("deadline" in (g.error or "") for g in rest)
    assert any("VIGIL_MAX_CHECKS_PER_MINUTE" in (g.error or "") for g in rest)
    assert len(got) == count
    assert {g.executor for g in got.values()} == {"exec-c1", "exec-c2"}
    assert await pending(r, keys) == 0


async def test_a_check_the_ceiling_holds_runs_when_a_token_comes(r, keys):
    """120 a minute: a burst of two, then one token each half second; four checks with time
    to spare all run, the last two once tokens came, none expired."""
    gate = Gate()
    gate.let_through(100)
    async with serve_app(gate.app()) as base:
        await put(r, keys, [http(f"m{i}", base, deadline_in_ms=30_000) for i in range(4)])
        executor = Executor(r, keys, settings("exec-wait", VIGIL_MAX_CHECKS_PER_MINUTE="120"))
        async with running(executor):
            await written(r, keys, 4)
        got = await results(r, keys)
    assert Counter(g.outcome for g in got.values()) == {"up": 4}
    assert await pending(r, keys) == 0


async def test_ceiling_grants_what_the_bucket_holds_in_one_call(r, keys):
    """A fresh bucket holds one second's worth; past it, a call gets what refilled since
    (bounded by Redis time between the calls) and the wait for the next token."""
    began = await redis_ms(r)
    ceiling = Ceiling(r, keys, 6)  # one token, then one each ten seconds
    first = await ceiling.take(3)
    second = await ceiling.take(3)
    refilled = (await redis_ms(r) - began) // 10_000
    assert first[0] == 1
    assert second[0] <= refilled
    assert all(0 < wait_s <= 10 for _, wait_s in (first, second))
    # The bucket's key goes once it would be full again: a missing bucket reads as full.
    assert 0 < await r.pttl(keys.ceiling) <= 11_000
    began = await redis_ms(r)
    big = Ceiling(r, Keys("big"), 6_000)  # 100 at once, then one each 10 ms
    assert await big.take(40) == (40, 0.0)
    granted, wait_s = await big.take(100)
    assert 60 <= granted <= 60 + (await redis_ms(r) - began) // 10
    assert 0 < wait_s <= 0.01


async def test_ceiling_out_of_reach_lets_checks_run_with_one_warning():
    away = redis_client(f"redis://127.0.0.1:{free_port()}/0")
    try:
        ceiling = Ceiling(away, Keys(), 60)
        with capture_logs() as logs:
            assert await ceiling.take(7) == (7, 0.0)
            assert await ceiling.take(3) == (3, 0.0)
    finally:
        await away.aclose()
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert "ceiling" in warnings[0]["event"]
    assert "VIGIL_MAX_CHECKS_PER_MINUTE" in warnings[0]["meanwhile"]


async def test_an_executor_of_another_shard_shares_the_first_shards_bucket(r):
    """The composition gives every executor the first shard's bucket, whichever shards it
    serves, and VIGIL_MAX_PER_HOST."""
    settings = Settings.from_env({"VIGIL_SHARDS": "2", "VIGIL_SERVE_SHARDS": "1",
                                  "VIGIL_MAX_CHECKS_PER_MINUTE": "60",
                                  "VIGIL_MAX_PER_HOST": "3"})
    layout = Layout.of(settings.shards, settings.served)
    [executor] = _services("executor", r, None, None, layout, settings,
                           Exporter(r, layout.served, ["executor"]), "127.0.0.1", 0)
    assert isinstance(executor, Executor)
    assert [lane.keys for lane in executor.lanes] == [Keys("1")]
    assert executor.ceiling is not None
    assert executor.ceiling.key == Keys("0").ceiling == "vigil:{0}:ceiling"
    assert executor.per_host == 3


async def test_the_ceiling_on_a_redis_cluster(cluster: LocalCluster):
    """Two executors' ceilings on a cluster client share one bucket in the first shard's slot
    (the script declares its one key, so the cluster routes it)."""
    cr = redis_client(cluster.url)
    try:
        await cr.flushall()
        began = await redis_ms(cr)
        one, other = Ceiling(cr, Keys("0"), 6), Ceiling(cr, Keys("0"), 6)
        granted = (await one.take(2))[0] + (await other.take(2))[0]
        assert 1 <= granted <= 1 + (await redis_ms(cr) - began) // 10_000
        assert await cr.exists(Keys("0").ceiling) == 1
    finally:
        await cr.aclose()
