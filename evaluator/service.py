"""`vigil evaluator`: turn check results into confirmed status and events.

Reads the results stream with its own group ("evaluator"), so it scales apart from the
executors and the sinks, and a change of rules never re-renders a check. Per batch: one read
of the states, rules and maintenance of the batch's monitors, the evaluation in Python
(evaluator.state, pure), and one call of evaluator/apply.lua, which writes each new state
with its events and the XACK of its result atomically, only over the revision it was computed
from. Why not evaluate inside the executor's completion script: quorum and flapping need
the state of every region of a monitor and a clock (a region gone silent has no result to
evaluate), the rules change without the check changing, and the executors' hot path stays
the one the benchmarks measure.

Time moves state too: a sweep every second turns regions whose results stopped into
`unknown` (keys.stale holds when each region goes stale). It only judges up to the point
the evaluator has read the results stream: a backlog after an outage of the evaluator is
not taken for silence.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError, ResponseError

from engine import metrics
from engine.clock import redis_ms
from engine.events import CheckResult
from engine.keys import EVALUATOR_GROUP, EVENT_GROUPS, NOTIFIER_GROUP, RESULT_GROUPS, Keys
from engine.rules import Rules
from engine.service import Outage, every
from engine.settings import Settings
from engine.shards import shard_of
from engine.streams import (
    EVENT_FIELD,
    Consumer,
    DeadLetters,
    Delivery,
    Entry,
    Upkeep,
    decoded,
    ensure_group,
    parse_id,
)
from evaluator.state import Dependency, Evaluation, MonitorState, Step, retire

APPLY_LUA = resources.files("evaluator").joinpath("apply.lua").read_text()
BATCH = 500
SWEEP_EVERY_S = 1.0
COLLECT_S = 0.05
SWEEP_BATCHES = 20
TRIM_EVERY_S = 10.0
# Rounds of computing again after a conflict before the entries are left to the claim sweep
# (two evaluators moving the same monitor rarely collide twice in a row).
MAX_ROUNDS = 8
log = structlog.get_logger(component="evaluator")


def member(monitor_id: str, region: str) -> str:
    return f"{monitor_id}|{region}"


@dataclass(slots=True)
class Loaded:
    """What an evaluation of some monitors reads first."""

    states: dict[str, tuple[int, MonitorState]]
    rules: dict[str, Rules | None]
    maintenance: dict[str, str | None]
    dependencies: dict[str, Dependency]


@dataclass(slots=True)
class Applying:
    """One evaluation on its way to apply.lua."""

    entry_id: bytes | str  # "" for an evaluation by time
    monitor_id: str
    base_rev: int
    state: bytes  # the state after this evaluation (later ones of the batch move it on)
    step: Step
    deadlines: dict[str, int | None]
    region: str = ""  # the result's, where a retry goes


def _decode_state(raw: bytes | None) -> tuple[int, MonitorState]:
    if raw is None:
        return 0, MonitorState()
    rev, _, body = raw.partition(b":")
    return int(rev), MonitorState.from_json(body)


class Evaluator:
    name = "evaluator"

    def __init__(self, r: aioredis.Redis, keys: Keys, settings: Settings) -> None:
        self.r = r
        self.keys = keys
        self.settings = settings
        self.consumer = Consumer(r, keys.results, EVALUATOR_GROUP, settings.instance_id)
        self.deadletters = DeadLetters(r, keys.deadletter)
        self._apply = r.register_script(APPLY_LUA)
        self._reading = Outage("reading results", role=self.name)

    # --- reading -------------------------------------------------------------------------

    async def _load(self, monitor_ids: list[str]) -> Loaded:
        # A GET each, not MGET: a cluster pipeline refuses multi-key commands.
        async with self.r.pipeline(transaction=False) as pipe:
            for mid in monitor_ids:
                pipe.get(self.keys.evaluation(mid))
            pipe.hmget(self.keys.rules, monitor_ids)
            pipe.hmget(self.keys.maintenance, monitor_ids)
            *raw_states, raw_rules, raw_windows = await pipe.execute()
        states = {mid: _decode_state(raw)
                  for mid, raw in zip(monitor_ids, raw_states, strict=True)}
        rules = {mid: None if raw is None else Rules.from_json(raw)
                 for mid, raw in zip(monitor_ids, raw_rules, strict=True)}
        maintenance = {mid: None if raw is None else raw.decode()
                       for mid, raw in zip(monitor_ids, raw_windows, strict=True)}
        wanted = sorted({dep for r in rules.values() if r for dep in r.depends_on})
        dependencies: dict[str, Dependency] = {}
        # A dependency may live in another shard, another cluster slot: one MGET per shard.
        by_shard: dict[str, list[str]] = {}
        for dep in wanted:
            by_shard.setdefault(shard_of(dep, self.settings.shards), []).append(dep)
        for shard, deps in by_shard.items():
            raws: list[bytes | None] = await self.r.mget(  # type: ignore[assignment]
                [Keys(shard).evaluation(dep) for dep in deps])
            for dep, raw in zip(deps, raws, strict=True):
                _, state = _decode_state(raw)
                dependencies[dep] = Dependency(
                    state.status, state.incident.id if state.incident else None)
        return Loaded(states, rules, maintenance, dependencies)

    # --- applying ------------------------------------------------------------------------

    async def _write(self, batch: list[Applying]) -> list[int]:
        """apply.lua over `batch`: per evaluation 1 applied, 0 evaluated before, -1 conflict."""
        if not batch:
            return []
        state_keys: dict[str, int] = {}
        args: list[bytes | str | int] = [EVALUATOR_GROUP, EVENT_FIELD]
        for item in batch:
            index = state_keys.setdefault(item.monitor_id, len(state_keys) + 5)
            updates = [f"S {member(item.monitor_id, region)} {'-' if at is None else at}"
                       for region, at in item.deadlines.items()]
            if item.step.retry_at_ms is not None:
                updates.append(f"R {member(item.monitor_id, item.region)} "
                               f"{item.step.retry_at_ms}")
            args += [item.entry_id, index, item.base_rev,
                     f"{item.base_rev + 1}:".encode() + item.state,
                     b"\n".join(event.to_json() for event in item.step.events),
                     "\n".join(updates)]
        keys = [self.keys.results, self.keys.events, self.keys.stale, self.keys.retries,
                *(self.keys.evaluation(mid) for mid in state_keys)]
        codes: list[int] = await self._apply(keys=keys, args=args)
        for item, code in zip(batch, codes, strict=True):
            if code == 1:
                for event in item.step.events:
                    metrics.EVENTS.labels(event.type).inc()
        return codes

    # --- results -------------------------------------------------------------------------

    async def evaluate(self, deliveries: list[Delivery]) -> None:
        """Evaluate and apply a batch of results; a result whose monitor another evaluator
        moved meanwhile is computed again from the new state."""
        work = await decoded(deliveries, CheckResult.from_json, self.consumer,
                             self.deadletters, "evaluator")
        for _ in range(MAX_ROUNDS):
            if not work:
                return
            work = await self._round(work)
            metrics.EVALUATION_CONFLICTS.inc(len(work))
        log.warning("results left for a later round: their monitors kept moving",
                    count=len(work))

    async def _round(self, work: list[tuple[bytes, CheckResult]]
                     ) -> list[tuple[bytes, CheckResult]]:
        by_monitor: dict[str, list[tuple[bytes, CheckResult]]] = defaultdict(list)
        for entry_id, result in work:
            by_monitor[result.monitor_id].append((entry_id, result))
        loaded = await self._load(sorted(by_monitor))
        batch: list[Applying] = []
        orphans: list[bytes] = []
        for mid, results in by_monitor.items():
            rules = loaded.rules[mid]
            rev, state = loaded.states[mid]
            if rules is None:  # removed or paused: nothing to evaluate it by
                orphans += [entry_id for entry_id, _ in results]
                if state.regions:
                    batch.append(self._retired(mid, rev, state,
                                               max(r.scheduled_ms for _, r in results)))
                continue
            deps = {d: loaded.dependencies[d] for d in rules.depends_on
                    if d in loaded.dependencies}
            for entry_id, result in sorted(results, key=lambda item: item[1].scheduled_ms):
                evaluation = Evaluation(mid, state, rules, deps)
                evaluation.result(result)
                batch.append(Applying(entry_id, mid, rev, state.to_json(), evaluation.step,
                                      evaluation.stale_deadlines(), result.region))
                rev += 1
        await self.consumer.ack(*orphans)
        codes = await self._write(batch)
        metrics.EVALUATED.inc(codes.count(1))
        applied = {item.entry_id for item, code in zip(batch, codes, strict=True) if code != -1}
        return [(entry_id, result) for entry_id, result in work
                if entry_id not in applied and entry_id not in orphans]

    @staticmethod
    def _retired(monitor_id: str, rev: int, state: MonitorState, at_ms: int) -> Applying:
        return Applying("", monitor_id, rev, MonitorState().to_json(),
                        retire(monitor_id, state, at_ms), dict.fromkeys(state.regions))

    # --- time ----------------------------------------------------------------------------

    async def evaluated_through(self) -> int:
        """Redis time, or earlier: the time of the oldest result this group has not
        finished with (unread or pending). Silence is judged only up to here."""
        now = await redis_ms(self.r)
        try:
            groups = await self.r.xinfo_groups(self.keys.results)
        except ResponseError:
            return now
        info = next((g for g in groups if g["name"].decode() == EVALUATOR_GROUP), None)
        if info is None:
            return now
        oldest = now
        if int(info["pending"]) > 0:
            summary = await self.r.xpending(self.keys.results, EVALUATOR_GROUP)
            if summary["min"] is not None:
                oldest = min(oldest, parse_id(summary["min"])[0])
        unread: list[Entry] = await self.r.xrange(  # type: ignore[assignment]
            self.keys.results, min=f"({info['last-delivered-id'].decode()}", count=1)
        if unread:
            oldest = min(oldest, parse_id(unread[0][0])[0])
        return oldest

    async def sweep_stale(self) -> int:
        """Regions past their staleness deadline become unknown (or, inside a paused
        maintenance window, have their deadline moved on); the number of monitors moved.
        Batch after batch while batches come full (a region's executors all gone at once),
        up to SWEEP_BATCHES a call."""
        through = await self.evaluated_through()
        moved = 0
        for _ in range(SWEEP_BATCHES):
            due: list[bytes] = await self.r.zrangebyscore(  # type: ignore[assignment]
                self.keys.stale, "-inf", through, start=0, num=BATCH)
            moved += await self._expire(sorted({m.decode().partition("|")[0] for m in due}),
                                        through)
            if len(due) < BATCH:
                break
        return moved

    async def _expire(self, monitor_ids: list[str], through: int) -> int:
        moved = 0
        for _ in range(MAX_ROUNDS):
            if not monitor_ids:
                break
            loaded = await self._load(monitor_ids)
            batch: list[Applying] = []
            for mid in monitor_ids:
                rules = loaded.rules[mid]
                rev, state = loaded.states[mid]
                if rules is None:
                    batch.append(self._retired(mid, rev, state, through))
                    continue
                evaluation = Evaluation(mid, state, rules)
                if (loaded.maintenance[mid] or "").startswith("pause:"):
                    evaluation.paused(through)
                else:
                    evaluation.expire(through)
                batch.append(Applying("", mid, rev, state.to_json(), evaluation.step,
                                      evaluation.stale_deadlines()))
            codes = await self._write(batch)
            moved += codes.count(1)
            monitor_ids = [item.monitor_id for item, code in zip(batch, codes, strict=True)
                           if code == -1]
        return moved

    # --- the service ---------------------------------------------------------------------

    async def sweep_claims(self) -> None:
        """Take over results an evaluator that died had read; evaluating one again is
        harmless (its XACK already happened, or happens now, once)."""
        claimed = await self.consumer.claim(self.settings.claim_idle_ms, count=BATCH)
        if claimed:
            metrics.CLAIMED.labels(self.keys.results).inc(len(claimed))
            log.info("claimed stalled results", count=len(claimed))
            await self.evaluate(claimed)

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                deliveries = await self.consumer.read(BATCH, 1000)
                if deliveries and len(deliveries) < BATCH:
                    # A moment for more to arrive: one round of reads and one script call
                    # for a burst, not one per result.
                    await asyncio.sleep(COLLECT_S)
                    deliveries += await self.consumer.read(BATCH - len(deliveries), None)
                if deliveries:
                    await self.evaluate(deliveries)
                self._reading.ok()
            except RedisError as exc:
                self._reading.failed(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)

    async def run(self, stop: asyncio.Event) -> None:
        for group in RESULT_GROUPS:
            await ensure_group(self.r, self.keys.results, group)
        # Every group of the events stream exists before its first event; the notifier's
        # from the end, so a notifier added to a stream with history does not send it.
        for group in EVENT_GROUPS:
            await ensure_group(self.r, self.keys.events, group,
                               "$" if group == NOTIFIER_GROUP else "0")
        log.info("evaluator started")
        await asyncio.gather(
            self._loop(stop),
            every(SWEEP_EVERY_S, stop, self.sweep_stale, "stale"),
            every(max(0.5, self.settings.claim_idle_ms / 4000), stop, self.sweep_claims,
                  "claim"),
            every(TRIM_EVERY_S, stop,
                  Upkeep(self.r, self.keys.results, EVALUATOR_GROUP, RESULT_GROUPS,
                         self.settings.retention), "upkeep"),
        )
        log.info("evaluator stopped")
