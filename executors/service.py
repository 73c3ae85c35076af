"""`vigil executor`: claim check.due events, run them under a concurrency bound, write results.

One executor serves one or more shards (executors.lane: a reader, completions, a sweep and
upkeep per shard) under one concurrency budget for the whole process. Each reader reads in
batches no larger than the room left in that budget, so an entry waits in Redis, not in this
process; readers of several shards that read at the same moment may together take more than
the room, and what is over waits here, in order, for the next free slot (at most a batch per
shard). Results are written and acknowledged together (streams.Completions), batched, on the
shard the check came from. A sweeper claims entries stalled past max timeout + grace from
peers whose heartbeats stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from engine import metrics, registry
from engine.clock import RESYNC_S, RedisClock
from engine.events import BadEvent, CheckDue, CheckResult, Observation
from engine.guard import REFRESH_S, Guard
from engine.keys import Keys
from engine.service import every
from engine.settings import Settings
from engine.streams import Delivery, Fields, event_of
from executors.base import Context, failed
from executors.checker import Checker, SpecInvalid
from executors.kinds import KINDS
from executors.lane import FLUSH_MAX, Lane

READ_BLOCK_MS = 1_000
FLUSH_EVERY_S = 0.01
TRIM_EVERY_S = 10.0
REPORT_EVERY_S = 10.0
METRICS_EVERY_S = 1.0
log = structlog.get_logger(component="executor")


class Executor:
    name = "executor"

    def __init__(self, r: aioredis.Redis, keys: Keys | Sequence[Keys], settings: Settings,
                 clock: RedisClock | None = None) -> None:
        self.r = r
        self.settings = settings
        # Expiry and the result's times are Redis time: a fast host clock must not expire a
        # check that is on time, nor a slow one run a check past its deadline.
        self.clock = clock or RedisClock(r)
        shards = [keys] if isinstance(keys, Keys) else list(keys)
        self.guard = Guard(settings)
        self.checker = Checker(Context(r, shards[0], guard=self.guard))
        self.lanes = [Lane(r, k, settings, replace(self.checker.ctx, keys=k)) for k in shards]
        self._inflight: set[asyncio.Task[None]] = set()
        # Delivered entries over the budget (readers of several shards read at once), started
        # in order as slots free.
        self._waiting: deque[tuple[Lane, Delivery]] = deque()
        self._slot_free = asyncio.Event()
        self._drain_by: float | None = None  # set at SIGTERM: when the drain gives up
        self._beat_s = registry.beat_every_s(settings.claim_idle_ms)
        # (kind, outcome) since the last metrics update (every second); outcomes since the
        # last log line.
        self._tally: Counter[tuple[str, str]] = Counter()
        self._outcomes: Counter[str] = Counter()

    @property
    def free(self) -> int:
        return self.settings.concurrency - len(self._inflight)

    def _admit(self, lane: Lane, delivery: Delivery) -> None:
        """Run a delivered entry, unless it is held already or it was delivered more than
        max_deliveries times (a check that keeps killing executors): that one ends as an
        `error` result and a dead letter."""
        if delivery.entry_id in lane.held:
            return
        lane.held.add(delivery.entry_id)
        if delivery.deliveries > self.settings.max_deliveries:
            self._give_up(lane, delivery.entry_id, delivery.fields, delivery.deliveries)
        elif self.free > 0:
            self._start(lane, delivery)
        else:
            self._waiting.append((lane, delivery))

    def _start(self, lane: Lane, delivery: Delivery) -> None:
        task = asyncio.create_task(self._handle(lane, delivery.entry_id, delivery.fields,
                                                delivery.deliveries))
        self._inflight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        # Draining, what waits is not started: it stays pending, for a peer or the next start.
        if self._waiting and self._drain_by is None:
            self._start(*self._waiting.popleft())
        self._slot_free.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("check handler failed", error=repr(task.exception()))

    async def _handle(self, lane: Lane, entry_id: bytes, fields: Fields, deliveries: int) -> None:
        try:
            due = CheckDue.from_json(event_of(fields))
        except BadEvent as exc:
            # Not a check we can account for: keep a copy, acknowledge, go on.
            log.error("bad check event dead-lettered", entry_id=entry_id.decode(), error=str(exc))
            await lane.deadletters.add(lane.stream, entry_id, event_of(fields), str(exc))
            await lane.consumer.ack(entry_id)
            lane.held.discard(entry_id)
            metrics.DEAD_LETTERS.labels(lane.stream).inc()
            return
        result = await self._run(lane, due, deliveries)
        self._measure(due, result)
        lane.complete((entry_id, result.to_json(), "", b""))

    async def _run(self, lane: Lane, due: CheckDue, deliveries: int) -> CheckResult:
        started = self.clock.now_ms()
        if started >= due.deadline_ms:
            obs = Observation(outcome="expired", error_kind="expired",
                              error=f"picked up {started - due.scheduled_ms} ms after its slot, "
                                    "past its deadline")
        else:
            obs = await self._observe(lane, due)
        return CheckResult.of(due, obs, started_ms=started, finished_ms=self.clock.now_ms(),
                              executor=self.settings.instance_id, deliveries=deliveries)

    async def _observe(self, lane: Lane, due: CheckDue) -> Observation:
        try:
            kind, prepared = self.checker.prepared(due)
        except SpecInvalid as exc:
            return failed("spec", str(exc))
        timeout_ms = min(due.timeout_ms, self.settings.max_timeout_ms)
        # Kinds budget their own deadlines from the effective timeout (executors.base.budget_s).
        due = replace(due, timeout_ms=timeout_ms)
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                return await self.checker.run(kind, prepared, due, lane.ctx)
        except TimeoutError:
            # The time spent, not the setting: a loaded loop fires the timeout late, and a
            # latency graph should show that.
            return Observation(outcome="down", error_kind="timeout",
                               error=f"no answer within {timeout_ms} ms",
                               latency_ms=(time.perf_counter() - start) * 1000)
        except Exception as exc:
            log.exception("check crashed", check_id=due.check_id, monitor_id=due.monitor_id)
            return failed("internal", repr(exc))

    def _measure(self, due: CheckDue, result: CheckResult) -> None:
        # The kind comes from the entry: one that no kind declares counts as "unknown", so a
        # bad entry cannot add a label value.
        kind = due.kind if due.kind in KINDS else "unknown"
        self._tally[kind, result.outcome] += 1
        metrics.LAG.observe(max(0, result.finished_ms - result.scheduled_ms) / 1000)
        if result.latency_ms is not None:
            metrics.LATENCY.labels(kind).observe(result.latency_ms / 1000)

    async def _flush(self, lane: Lane) -> None:
        if not await lane.flush():
            await asyncio.sleep(0.5)  # the flusher calls again (and, draining, knows when to stop)

    async def _flusher(self, lane: Lane, stop: asyncio.Event) -> None:
        while not (stop.is_set() and not self._inflight and not lane.done):
            if self._drain_by is not None and time.monotonic() >= self._drain_by:
                log.warning("stopping with results unwritten; their checks stay pending",
                            stream=lane.stream, results=len(lane.done))
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lane.done_ready.wait(), timeout=0.2)
            lane.done_ready.clear()
            # A short pause lets a burst of completions share one round trip.
            await asyncio.sleep(FLUSH_EVERY_S)
            await self._flush(lane)

    async def _reader(self, lane: Lane, stop: asyncio.Event) -> None:
        while not stop.is_set():
            room = self.free - len(self._waiting)
            if room <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            try:
                entries = await lane.consumer.read(min(room, FLUSH_MAX), READ_BLOCK_MS)
                lane.reading.ok()
            except RedisError as exc:
                lane.reading.failed(exc)
                await asyncio.sleep(1.0)
                continue
            for delivery in entries:
                self._admit(lane, delivery)

    async def _each(self, job: Callable[[Lane], Awaitable[int | None]]) -> int:
        """`job` on every lane at once, the counts summed: one shard's server being away
        holds back only its own lane; the first failure is raised after all have run."""
        done = await asyncio.gather(*(job(lane) for lane in self.lanes), return_exceptions=True)
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
        return sum(outcome or 0 for outcome in done if not isinstance(outcome, BaseException))

    async def sweep(self) -> int:
        """Claim stalled entries on every shard (sweep_lane); how many were claimed."""
        return await self._each(self.sweep_lane)

    async def sweep_lane(self, lane: Lane) -> int:
        """Claim entries of executors that stopped beating, and its own whose delivery never
        reached it (the reply lost to an outage); past max_deliveries they end as `error`.
        A live peer's entries are never taken, even idle past the claim time (its results
        wait for Redis after an outage: a claim would record its real result as `expired`);
        nor does this executor judge before it has watched Redis steadily for a claim time
        (after an outage, every peer's heartbeat is as old as the outage)."""
        idle_ms = self.settings.claim_idle_ms
        if self.free <= 0 or lane.steady.for_ms() < idle_ms:
            return 0
        live = registry.alive(await registry.executors(self.r, lane.keys), self.clock.now_ms(),
                              idle_ms)
        claimed = [d for d in await lane.consumer.claim(idle_ms, count=self.free, spare=live)
                   if d.entry_id not in lane.held]  # its own, still running or being written
        for delivery in claimed:
            metrics.CLAIMED.labels(lane.stream).inc()
            log.info("claimed stalled check", entry_id=delivery.entry_id.decode(),
                     deliveries=delivery.deliveries)
            self._admit(lane, delivery)
        return len(claimed)

    def _give_up(self, lane: Lane, entry_id: bytes, fields: Fields, deliveries: int) -> None:
        try:
            due = CheckDue.from_json(event_of(fields))
        except BadEvent:
            # Dead-lettered by the handler.
            self._start(lane, Delivery(entry_id, fields, deliveries))
            return
        reason = f"delivered {deliveries} times, max_deliveries is {self.settings.max_deliveries}"
        log.error("check dead-lettered", check_id=due.check_id, monitor_id=due.monitor_id,
                  reason=reason)
        now = self.clock.now_ms()
        obs = failed("max_deliveries", reason)
        result = CheckResult.of(due, obs, started_ms=now, finished_ms=now,
                                executor=self.settings.instance_id, deliveries=deliveries)
        self._measure(due, result)
        # Dead-lettered in the same step as its XACK.
        lane.complete((entry_id, result.to_json(), reason, event_of(fields)))
        metrics.DEAD_LETTERS.labels(lane.stream).inc()

    async def heartbeat(self) -> None:
        """This executor serves its region (engine.registry) in every shard's registry, with
        how busy the process is."""
        await self._each(self._beat)

    async def _beat(self, lane: Lane) -> None:
        await registry.beat(self.r, lane.keys, self.settings.instance_id, self.settings.region,
                            self.clock.now_ms(), len(self._inflight), self.settings.concurrency)
        lane.steady.ok()

    async def forget_gone(self) -> None:
        """Registry entries gone a day are dropped: with the upkeep, not at every beat (it
        reads the whole registry)."""
        await self._each(lambda lane: registry.forget_gone(self.r, lane.keys,
                                                           self.clock.now_ms()))

    async def upkeep(self) -> None:
        await self._each(lambda lane: lane.upkeep())

    async def publish_metrics(self) -> None:
        """Once a second rather than per check: prometheus-client takes a lock per update."""
        metrics.INFLIGHT.set(len(self._inflight))
        metrics.CONCURRENCY.set(self.settings.concurrency)
        for (kind, outcome), count in self._tally.items():
            metrics.RESULTS.labels(kind, self.settings.region, outcome).inc(count)
            self._outcomes[outcome] += count
        self._tally.clear()

    async def report(self) -> None:
        """A line every REPORT_EVERY_S that shows checks flowing, without a line per check."""
        if self._outcomes:
            log.info("checks done", inflight=len(self._inflight), **self._outcomes)
            self._outcomes.clear()

    async def run(self, stop: asyncio.Event) -> None:
        for lane in self.lanes:
            await lane.open()
        await self.checker.start()
        await self.clock.sync()
        log.info("executor started", streams=[lane.stream for lane in self.lanes],
                 concurrency=self.settings.concurrency)
        sweep_every = max(0.5, min(5.0, self.settings.claim_idle_ms / 4000))
        try:
            await asyncio.gather(
                *(self._reader(lane, stop) for lane in self.lanes),
                *(self._flusher(lane, stop) for lane in self.lanes),
                every(RESYNC_S, stop, self.clock.sync, "clock"),
                every(REFRESH_S, stop, self.guard.refresh, "guard"),
                every(self._beat_s, stop, self.heartbeat, "heartbeat"),
                every(sweep_every, stop, self.sweep, "claim"),
                every(TRIM_EVERY_S, stop, self.forget_gone, "registry"),
                every(TRIM_EVERY_S, stop, self.upkeep, "upkeep"),
                every(METRICS_EVERY_S, stop, self.publish_metrics, "metrics"),
                every(REPORT_EVERY_S, stop, self.report, "report"),
                self._drain(stop),
            )
        finally:
            await self.checker.close()
        log.info("executor stopped")

    async def _drain(self, stop: asyncio.Event) -> None:
        """After SIGTERM: let in-flight checks finish and their results be written, within
        drain_s; what is left then stays pending in Redis, for a peer or this name's next
        start, and the executor exits all the same."""
        await stop.wait()
        self._drain_by = time.monotonic() + self.settings.drain_s
        if self._inflight:
            log.info("draining in-flight checks", inflight=len(self._inflight))
            _, late = await asyncio.wait(self._inflight, timeout=self.settings.drain_s)
            for task in late:
                task.cancel()
        for lane in self.lanes:
            lane.done_ready.set()
