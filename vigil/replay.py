"""`vigil replay`: rebuild the Postgres projections of the events stream (confirmed_status,
confirmed_history, incidents) from the results in ClickHouse.

Every result is read back (`FINAL`: one row per check) in scheduled order, then finish time
(the order results reach the live evaluator in), and evaluated by the evaluator's own pure
function (evaluator.state) with each monitor's rules as the scheduler compiles them; the
events go through the live projection's SQL (engine.incidents.project). So for the same
results the rebuild holds the rows the live sinks wrote. Last, every region silent past its
staleness until now turns unknown, as the live evaluator's sweep has done.

What results cannot tell is not rebuilt: acknowledgements and notes (they go with the
tables), rules as they were before their last change (today's are used), and when a monitor
was paused or removed (its results are skipped; the incident the live evaluator resolved
then stays open here if no result resolved it). A dependency is judged by its state at the
dependent's result in scheduled order, where the live evaluator saw what it had evaluated
by then.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from engine import incidents, store
from engine.clickhouse import ClickHouse
from engine.events import CheckResult, Event
from engine.rules import Rules
from evaluator.state import Dependency, Evaluation, MonitorState
from vigil.admin import CommandError

PAGE = 10_000

# The key that orders results is also the page cursor: a check id is one row under FINAL.
RESULTS_SQL = """
SELECT check_id, monitor_id, region, toUnixTimestamp64Milli(scheduled),
       toUnixTimestamp64Milli(started), toUnixTimestamp64Milli(finished), outcome, latency_ms,
       status_code, error_kind, error, maintenance
FROM check_results FINAL
WHERE (scheduled, finished, check_id) > (fromUnixTimestamp64Milli({scheduled:Int64}, 'UTC'),
                                         fromUnixTimestamp64Milli({finished:Int64}, 'UTC'),
                                         {check_id:String})
ORDER BY scheduled, finished, check_id
LIMIT {page:UInt32}
"""


def result_of(row: tuple[Any, ...]) -> CheckResult:
    """A check_results row as the check.result it was written from (the fields evaluation
    reads; the sink wrote a missing error as '')."""
    (check_id, monitor_id, region, scheduled, started, finished, outcome, latency, code,
     error_kind, error, maintenance) = row
    return CheckResult(check_id=check_id, monitor_id=monitor_id, region=region,
                       scheduled_ms=scheduled, started_ms=started, finished_ms=finished,
                       outcome=outcome, latency_ms=latency, status_code=code,
                       error_kind=error_kind or None, error=error or None,
                       maintenance=bool(maintenance))


async def results(ch: ClickHouse, page: int = PAGE) -> AsyncIterator[list[CheckResult]]:
    """Every result in evaluation order, a page at a time (bounded memory)."""
    cursor: dict[str, Any] = {"scheduled": -1, "finished": -1, "check_id": ""}
    while True:
        rows = await ch.rows(RESULTS_SQL, {**cursor, "page": page})
        if not rows:
            return
        batch = [result_of(row) for row in rows]
        yield batch
        last = batch[-1]
        cursor = {"scheduled": last.scheduled_ms, "finished": last.finished_ms,
                  "check_id": last.check_id}


@dataclass(slots=True)
class Replay:
    """The evaluation of every monitor, in memory, as the live evaluator keeps it in Redis."""

    rules: dict[str, Rules]
    states: dict[str, MonitorState] = field(default_factory=dict)
    evaluated: int = 0

    def _state(self, monitor_id: str) -> MonitorState:
        return self.states.setdefault(monitor_id, MonitorState())

    def _dependency(self, monitor_id: str) -> Dependency:
        state = self._state(monitor_id)
        return Dependency(state.status, state.incident.id if state.incident else None)

    def result(self, result: CheckResult) -> list[Event]:
        rules = self.rules.get(result.monitor_id)
        if rules is None:
            return []  # paused or removed: the live evaluator has no rules for it either
        evaluation = Evaluation(result.monitor_id, self._state(result.monitor_id), rules,
                                {dep: self._dependency(dep) for dep in rules.depends_on})
        evaluation.result(result)
        self.evaluated += 1
        return evaluation.step.events

    def expire(self, now_ms: int) -> list[Event]:
        events: list[Event] = []
        for monitor_id, state in sorted(self.states.items()):
            if monitor_id in self.rules and state.regions:
                evaluation = Evaluation(monitor_id, state, self.rules[monitor_id])
                evaluation.expire(now_ms)
                events += evaluation.step.events
        return events


async def replay(pool: asyncpg.Pool, ch: ClickHouse, truncate: bool) -> tuple[int, int]:
    """Rebuild the projection; (results evaluated, events projected). Refuses tables that
    hold rows unless `truncate`."""
    async with pool.acquire() as conn:
        if not await incidents.empty(conn):
            if not truncate:
                raise CommandError(
                    "the incidents and confirmed status tables hold rows; --yes empties them "
                    f"first ({', '.join(incidents.TABLES)}: acknowledgements and notes too)")
            await incidents.truncate(conn)
    monitor_ids = [r["id"] for r in await store.list_all(pool)]
    rules = {row["id"]: Rules.of_row(row) for row in await store.plan_rows(pool, monitor_ids)}
    state = Replay(rules)
    projected = 0
    async with pool.acquire() as conn:
        async for batch in results(ch):
            events = [e for r in batch for e in state.result(r)]
            await incidents.project(conn, events)
            projected += len(events)
        now: datetime = await conn.fetchval("SELECT now()")
        events = state.expire(int(now.timestamp() * 1000))
        await incidents.project(conn, events)
    return state.evaluated, projected + len(events)
