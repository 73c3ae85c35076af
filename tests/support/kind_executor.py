"""Run check kinds through a real Executor on the test redis-server: one check.due per
monitor, results read back from the results stream."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aioredis

from engine.events import CheckDue, CheckResult, Observation, check_id
from engine.keys import EXECUTOR_GROUP, Keys
from engine.resolver import Resolver
from engine.settings import Settings
from engine.streams import EVENT_FIELD, ensure_group, event_of
from executors.base import Context
from executors.checker import Checker
from executors.kinds import KINDS
from executors.service import Executor
from tests.support.helpers import wait_for


def check_due(monitor_id: str, kind: str, spec: dict[str, Any], *, timeout_ms: int = 5_000,
              interval_ms: int = 30_000, scheduled_ms: int | None = None,
              spec_version: int = 1) -> CheckDue:
    """A check.due as the scheduler writes it, for the default region: scheduled now unless
    told otherwise, due by the next slot."""
    scheduled = int(time.time() * 1000) if scheduled_ms is None else scheduled_ms
    return CheckDue(check_id=check_id(monitor_id, "default", scheduled), monitor_id=monitor_id,
                    region="default", scheduled_ms=scheduled, deadline_ms=scheduled + interval_ms,
                    interval_ms=interval_ms, timeout_ms=timeout_ms, spec_version=spec_version,
                    kind=kind, spec=spec)


async def observe(ctx: Context, kind: str, spec: dict[str, Any], timeout_ms: int) -> Observation:
    """One check of `kind` as the executor runs it (a denied target is its `error`): the parsed
    spec, and a check.due carrying the timeout the kind budgets from."""
    due = check_due(f"{kind}-check", kind, spec, timeout_ms=timeout_ms)
    declared = KINDS[kind]
    prepared = declared.prepare(declared.spec.model_validate(spec))
    return await Checker(ctx).run(declared, prepared, due, ctx)


async def run_checks(r: aioredis.Redis, keys: Keys, dues: list[CheckDue],
                     settings: Settings, wait_s: float = 20,
                     resolver: Resolver | None = None) -> dict[str, CheckResult]:
    """The dues run by a real Executor with `settings` (its guard's deny list among them), its
    names resolved by `resolver` when one is given."""
    stream = keys.checks("default")
    await ensure_group(r, stream, EXECUTOR_GROUP)
    for due in dues:
        await r.xadd(stream, {EVENT_FIELD: due.to_json()})
    stop = asyncio.Event()
    executor = Executor(r, keys, settings)
    if resolver is not None:
        for ctx in (executor.checker.ctx, *(lane.ctx for lane in executor.lanes)):
            ctx.resolver = resolver
    task = asyncio.create_task(executor.run(stop))

    async def enough() -> bool:
        return int(await r.xlen(keys.results)) >= len(dues)

    try:
        await wait_for(enough, timeout=wait_s)
    finally:
        stop.set()
        await task
    out: dict[str, CheckResult] = {}
    for _, fields in await r.xrange(keys.results):
        result = CheckResult.from_json(event_of(fields))
        assert result.monitor_id not in out, "two results for one check"
        out[result.monitor_id] = result
    pending = await r.xpending(stream, EXECUTOR_GROUP)
    assert int(pending["pending"]) == 0
    return out
