"""One executor process serving two shards on one redis-server: a reader per shard, one
concurrency budget for the process, each result on the shard its check came from."""

from __future__ import annotations

from engine import registry
from engine.events import CheckResult
from engine.keys import EXECUTOR_GROUP, Keys
from engine.settings import Settings
from engine.streams import EVENT_FIELD, ensure_group, event_of
from executors.service import Executor
from tests.support.helpers import running, wait_for
from tests.support.kind_executor import check_due
from tests.support.servers import Gate, serve_app

SHARDS = (Keys("0"), Keys("1"))
CONCURRENCY = 3
PER_SHARD = 4


async def shard_results(r, keys: Keys) -> list[CheckResult]:
    return [CheckResult.from_json(event_of(fields)) for _, fields in await r.xrange(keys.results)]


async def test_one_executor_serves_two_shards_under_one_budget(r):
    gate = Gate()
    settings = Settings(instance_id="exec-two", concurrency=CONCURRENCY, max_timeout_ms=10_000)
    async with serve_app(gate.app()) as base:
        for keys in SHARDS:
            stream = keys.checks("default")
            await ensure_group(r, stream, EXECUTOR_GROUP)
            for i in range(PER_SHARD):
                due = check_due(f"s{keys.shard}-{i}", "http", {"url": f"{base}/"},
                                timeout_ms=10_000)
                await r.xadd(stream, {EVENT_FIELD: due.to_json()})
        executor = Executor(r, SHARDS, settings)
        async with running(executor):

            async def budget_full() -> bool:
                return gate.holding == CONCURRENCY

            async def one_more(answered: int) -> bool:
                return gate.answered > answered and (gate.holding == CONCURRENCY
                                                     or gate.answered + gate.holding
                                                     == 2 * PER_SHARD)

            await wait_for(budget_full)
            # Let the checks through one at a time: each answer frees one slot, which the next
            # waiting check (of either shard) takes.
            for answered in range(2 * PER_SHARD):
                gate.let_through(1)
                await wait_for(lambda answered=answered: one_more(answered))

            async def all_written() -> bool:
                return sum([await r.xlen(k.results) for k in SHARDS]) == 2 * PER_SHARD

            await wait_for(all_written)
        assert gate.most == CONCURRENCY
        for keys in SHARDS:
            got = await shard_results(r, keys)
            assert sorted(g.monitor_id for g in got) == [f"s{keys.shard}-{i}"
                                                         for i in range(PER_SHARD)]
            assert {g.outcome for g in got} == {"up"}
            pending = await r.xpending(keys.checks("default"), EXECUTOR_GROUP)
            assert pending["pending"] == 0
            [seen] = await registry.executors(r, keys)
            assert seen.instance == "exec-two"
