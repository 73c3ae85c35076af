"""`vigil executor`: claim check.due events, run them under a concurrency bound, write results.

One executor serves one or more shards (executors.lane: a reader, completions, a sweep and
upkeep per shard) with one pool of `concurrency` workers for the whole process. Readers keep
a small buffer of delivered checks ahead of the workers (at most PREFETCH_MAX, read in batches
no smaller than READ_MIN while it fills), so a worker that ends a check starts the next one
without a round trip to Redis; the buffer hands out critical monitors first and holds back a
host that has its VIGIL_MAX_PER_HOST checks running (executors.admission). With
VIGIL_MAX_CHECKS_PER_MINUTE a check starts only with a token of the ceiling all executors
share (executors.ceiling), taken for a whole read batch at once. A check picked up past its
deadline, or held by the ceiling until it passes, is `expired` without running; so is one
that would start more than VIGIL_LAG_TARGET_MS after its slot while the executor is behind
(executors.admission.Shedding): above its limits an executor runs what it can on time
instead of running everything late. Results are written and acknowledged together
(streams.Completions), batched, on the shard the check came from. A sweeper claims entries
stalled past max timeout + grace from peers whose heartbeats stopped.
"""

from __future__ import annotations

import asyncio
import math
import os
import resource
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from engine import metrics, registry
from engine.clock import RESYNC_S, RedisClock
from engine.connections import cluster_nodes
from engine.events import BadEvent, CheckDue, CheckResult, Observation
from engine.guard import REFRESH_S, Guard
from engine.keys import Keys
from engine.service import every
from engine.settings import Settings
from engine.shards import listed
from engine.streams import Delivery, event_of
from executors.admission import Ready, Slot, Timeouts, host_of
from executors.base import Context, failed
from executors.ceiling import Ceiling
from executors.checker import Checker, SpecInvalid
from executors.kinds import KINDS
from executors.lane import FLUSH_MAX, Lane

READ_BLOCK_MS = 1_000
# The buffer of delivered checks ahead of the workers, and the smallest read that tops it up
# while it still holds some: one round trip brings many checks, not one per check ended.
PREFETCH_MAX = 256
READ_MIN = 16
# After a read or a flush that found less than it could take, the next waits this long, so
# a trickle of checks shares round trips; the first check after a quiet spell goes at once.
GATHER_S = 0.002
TRIM_EVERY_S = 10.0
REPORT_EVERY_S = 10.0
METRICS_EVERY_S = 1.0
# While the ceiling holds checks: the least wait before asking it again (tokens add up
# meanwhile, so one call takes several), and how often the held are looked at for deadlines.
HOLD_MIN_S = 0.05
HOLD_TICK_S = 0.1
# Files a process may open after start besides its checks' sockets (its Redis and Postgres
# pools growing, the metrics server's connections, DNS lookups); those open at start count
# apart.
FILES_BESIDE_CHECKS = 128
OPEN_FILES = "/dev/fd"  # this process's open files, one entry each (Linux and the BSDs)
log = structlog.get_logger(component="executor")


def open_files_for(concurrency: int) -> None:
    """Each check in flight holds a socket. Many systems start a process with a soft
    RLIMIT_NOFILE of 1024: under that, checks past it failed to connect (EMFILE) and were
    recorded `down`, a false alarm. A soft limit short of the files open now (in `vigil up`
    the other roles' and chDB's) plus the concurrency is raised to the hard one; if that is
    short too, one warning names the setting to lower."""
    wanted = len(os.listdir(OPEN_FILES)) + concurrency + FILES_BESIDE_CHECKS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    if hard != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.info("open files limit raised", soft=soft, to=hard)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        log.warning("VIGIL_CONCURRENCY needs more open files than this process may have; "
                    "checks past the limit fail to connect", concurrency=concurrency,
                    open_files_limit=hard, needed=wanted,
                    fix="lower VIGIL_CONCURRENCY or raise the hard limit (ulimit -Hn)")


@dataclass(slots=True, eq=False)
class Work:
    """A delivered check, decoded, waiting for a worker."""

    lane: Lane
    entry_id: bytes
    due: CheckDue
    deliveries: int
    critical: bool
    host: str


class Executor:
    name = "executor"

    def __init__(self, r: aioredis.Redis, keys: Keys | Sequence[Keys], settings: Settings,
                 clock: RedisClock | None = None, ceiling_keys: Keys | None = None) -> None:
        self.r = r
        self.settings = settings
        # Expiry and the result's times are Redis time: a fast host clock must not expire a
        # check that is on time, nor a slow one run a check past its deadline.
        self.clock = clock or RedisClock(r)
        shards = listed(keys)
        self.guard = Guard(settings, nodes=lambda: cluster_nodes(r))
        self.checker = Checker(Context(r, shards[0], guard=self.guard))
        self.lanes = [Lane(r, k, settings, replace(self.checker.ctx, keys=k)) for k in shards]
        self.per_host = settings.max_per_host
        self._ready: Ready[Work] = Ready(self.per_host)
        # The ceiling's bucket is one for the deployment: the first shard's (roles passes it),
        # whichever shards this process serves.
        per_minute = settings.max_checks_per_minute
        self.ceiling = (Ceiling(r, ceiling_keys or shards[0], per_minute)
                        if per_minute is not None else None)
        # Tokens of the ceiling this process holds for checks it has not started; without a
        # ceiling there is no end to them.
        self._tokens: float = 0 if self.ceiling is not None else math.inf
        self._wanted = asyncio.Event()  # checks came in: tokens are wanted for them
        self._prefetch = min(settings.concurrency, PREFETCH_MAX)
        self._slots = [Slot() for _ in range(settings.concurrency)]
        self._timeouts = Timeouts(self._slots)
        self._running = 0
        self._idle: deque[asyncio.Future[None]] = deque()  # workers waiting for a check
        self._room = asyncio.Event()  # a worker took a check: readers may read again
        self._stopping = False
        self._workers_done = asyncio.Event()
        self._chores: set[asyncio.Task[None]] = set()  # dead letters of undecodable entries
        self._drain_by: float | None = None  # set at SIGTERM: when the drain gives up
        self._beat_s = registry.beat_every_s(settings.claim_idle_ms)
        # (kind, outcome) since the last metrics update (every second); outcomes since the
        # last log line.
        self._tally: Counter[tuple[str, str]] = Counter()
        self._outcomes: Counter[str] = Counter()
        # The latency histogram's child per kind, looked up once rather than per check.
        self._latency = {kind: metrics.LATENCY.labels(kind) for kind in (*KINDS, "unknown")}

    @property
    def free(self) -> int:
        """Checks this process can take now: free workers and room in the buffer."""
        return self.settings.concurrency + self._prefetch - self._running - len(self._ready)

    def _admit(self, lane: Lane, delivery: Delivery) -> None:
        """Queue a delivered entry for a worker, unless it is held already. One that does not
        decode is dead-lettered; one delivered more than max_deliveries times (a check that
        keeps killing executors) ends as an `error` result and a dead letter."""
        if delivery.entry_id in lane.held:
            return
        lane.held.add(delivery.entry_id)
        try:
            due = CheckDue.from_json(event_of(delivery.fields))
        except BadEvent as exc:
            self._chore(self._dead_letter(lane, delivery, str(exc)))
            return
        if delivery.deliveries > self.settings.max_deliveries:
            self._give_up(lane, delivery, due)
            return
        host = host_of(due.spec) if self.per_host is not None else ""
        self._ready.push(Work(lane, delivery.entry_id, due, delivery.deliveries, due.critical,
                              host))
        self._wanted.set()
        if self._idle and self._tokens >= 1:  # else the meter wakes one with its token
            self._idle.popleft().set_result(None)

    def _chore(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(job)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _dead_letter(self, lane: Lane, delivery: Delivery, reason: str) -> None:
        """Not a check we can account for: keep a copy, acknowledge, go on."""
        log.error("bad check event dead-lettered", entry_id=delivery.entry_id.decode(),
                  error=reason)
        await lane.deadletters.add(lane.stream, delivery.entry_id, event_of(delivery.fields),
                                   reason)
        await lane.consumer.ack(delivery.entry_id)
        lane.held.discard(delivery.entry_id)
        metrics.DEAD_LETTERS.labels(lane.stream).inc()

    async def _worker(self, slot: Slot) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            work = self._next()
            if work is None:
                idle = loop.create_future()
                self._idle.append(idle)
                await idle
                continue
            self._room.set()
            self._running += 1
            try:
                await self._process(slot, work)
            finally:
                self._running -= 1
                self._ready.done(work)

    def _next(self) -> Work | None:
        """The next check to start, if one may: with the ceiling, a token goes with it."""
        if self._tokens < 1:
            return None
        work = self._ready.pop()
        if work is not None:
            self._tokens -= 1
        return work

    async def _process(self, slot: Slot, work: Work) -> None:
        due = work.due
        started = self.clock.now_ms()
        lag = started - due.scheduled_ms
        if started >= due.deadline_ms:
            late = "past its deadline"
        elif work.lane.shedding.sheds(lag, work.critical):
            late = ("while this executor was behind "
                    f"(VIGIL_LAG_TARGET_MS {self.settings.lag_target_ms})")
        else:
            late = ""
        if late:
            self._tokens += 1  # not started: its token serves the next check
            self._expire(work, started, f"picked up {lag} ms after its slot, {late}")
            return
        work.lane.shedding.started(lag, time.monotonic())
        obs = await self._observe(slot, work.lane, due)
        self._record(work, obs, started)

    def _expire(self, work: Work, now: int, error: str) -> None:
        self._record(work, Observation(outcome="expired", error_kind="expired", error=error), now)

    def _record(self, work: Work, obs: Observation, started: int) -> None:
        result = CheckResult.of(work.due, obs, started_ms=started,
                                finished_ms=self.clock.now_ms(),
                                executor=self.settings.instance_id, deliveries=work.deliveries)
        self._measure(work.due, result)
        work.lane.complete((work.entry_id, result.to_json(), "", b""))

    async def _meter(self, ceiling: Ceiling) -> None:
        """Tokens of the ceiling for the checks waiting: one call for all a read brought in;
        while the ceiling holds checks back, one call each time its next token is due."""
        while not self._stopping:
            want = len(self._ready) - int(self._tokens)
            if want <= 0:
                self._wanted.clear()
                await self._wanted.wait()
                continue
            granted, wait_s = await ceiling.take(want)
            self._tokens += granted
            for _ in range(min(granted, len(self._idle))):
                self._idle.popleft().set_result(None)
            if granted < want:
                await self._hold(max(wait_s, HOLD_MIN_S), ceiling)

    async def _hold(self, wait_s: float, ceiling: Ceiling) -> None:
        """Wait `wait_s` for the ceiling's next token; a check held meanwhile past its
        deadline is `expired` (its entry acknowledged with the result, as any other)."""
        until = time.monotonic() + wait_s
        error = (f"held past its deadline by VIGIL_MAX_CHECKS_PER_MINUTE "
                 f"({ceiling.per_minute} checks a minute over every executor)")
        while not self._stopping:
            self._expire_late(error)
            left = until - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, HOLD_TICK_S))

    def _expire_late(self, error: str) -> None:
        now = self.clock.now_ms()
        late = self._ready.remove(lambda w: w.due.deadline_ms <= now)
        for work in late:
            self._expire(work, now, error)
        if late:
            self._room.set()  # the buffer has room for what the stream holds behind them

    async def _observe(self, slot: Slot, lane: Lane, due: CheckDue) -> Observation:
        try:
            kind, prepared = self.checker.prepared(due)
        except SpecInvalid as exc:
            return failed("spec", str(exc))
        timeout_ms = min(due.timeout_ms, self.settings.max_timeout_ms)
        if timeout_ms != due.timeout_ms:
            # Kinds budget their own deadlines from the effective timeout (base.budget_s).
            due = replace(due, timeout_ms=timeout_ms)
        start = time.perf_counter()
        self._timeouts.start(slot, timeout_ms / 1000)
        try:
            return await self.checker.run(kind, prepared, due, lane.ctx)
        except asyncio.CancelledError:
            if not slot.fired:
                raise  # the drain gave up on it
            slot.fired = False
            if slot.task is not None:
                slot.task.uncancel()
            # The time spent, not the setting: a loaded loop fires the timeout late, and a
            # latency graph should show that.
            return Observation(outcome="down", error_kind="timeout",
                               error=f"no answer within {timeout_ms} ms",
                               latency_ms=(time.perf_counter() - start) * 1000)
        except Exception as exc:
            log.exception("check crashed", check_id=due.check_id, monitor_id=due.monitor_id)
            return failed("internal", repr(exc))
        finally:
            self._timeouts.stop(slot)

    def _measure(self, due: CheckDue, result: CheckResult) -> None:
        # The kind comes from the entry: one that no kind declares counts as "unknown", so a
        # bad entry cannot add a label value.
        kind = due.kind if due.kind in KINDS else "unknown"
        self._tally[kind, result.outcome] += 1
        metrics.LAG.observe(max(0, result.finished_ms - result.scheduled_ms) / 1000)
        if result.latency_ms is not None:
            self._latency[kind].observe(result.latency_ms / 1000)

    async def _flusher(self, lane: Lane) -> None:
        while not (self._workers_done.is_set() and not lane.done):
            if self._drain_by is not None and time.monotonic() >= self._drain_by:
                log.warning("stopping with results unwritten; their checks stay pending",
                            stream=lane.stream, results=len(lane.done))
                return
            await lane.done_ready.wait()
            lane.done_ready.clear()
            if not await lane.flush():
                await asyncio.sleep(0.5)  # the entries stay pending meanwhile
                lane.done_ready.set()
            elif not self._workers_done.is_set():
                await asyncio.sleep(GATHER_S)

    async def _reader(self, lane: Lane, stop: asyncio.Event) -> None:
        while not stop.is_set():
            want = min(self.free, FLUSH_MAX)
            if want <= 0 or (len(self._ready) and want < READ_MIN):
                self._room.clear()
                await self._room.wait()
                continue
            try:
                entries = await lane.consumer.read(want, READ_BLOCK_MS)
                lane.reading.ok()
            except RedisError as exc:
                lane.reading.failed(exc)
                await asyncio.sleep(1.0)
                continue
            for delivery in entries:
                self._admit(lane, delivery)
            if len(entries) < want:
                await asyncio.sleep(GATHER_S)

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

    def _give_up(self, lane: Lane, delivery: Delivery, due: CheckDue) -> None:
        deliveries = delivery.deliveries
        reason = f"delivered {deliveries} times, max_deliveries is {self.settings.max_deliveries}"
        log.error("check dead-lettered", check_id=due.check_id, monitor_id=due.monitor_id,
                  reason=reason)
        now = self.clock.now_ms()
        obs = failed("max_deliveries", reason)
        result = CheckResult.of(due, obs, started_ms=now, finished_ms=now,
                                executor=self.settings.instance_id, deliveries=deliveries)
        self._measure(due, result)
        # Dead-lettered in the same step as its XACK.
        lane.complete((delivery.entry_id, result.to_json(), reason, event_of(delivery.fields)))
        metrics.DEAD_LETTERS.labels(lane.stream).inc()

    async def heartbeat(self) -> None:
        """This executor serves its region (engine.registry) in every shard's registry, with
        how busy the process is."""
        await self._each(self._beat)

    async def _beat(self, lane: Lane) -> None:
        await registry.beat(self.r, lane.keys, self.settings.instance_id, self.settings.region,
                            self.clock.now_ms(), self._running, self.settings.concurrency)
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
        metrics.INFLIGHT.set(self._running)
        metrics.CONCURRENCY.set(self.settings.concurrency)
        for (kind, outcome), count in self._tally.items():
            metrics.RESULTS.labels(kind, self.settings.region, outcome).inc(count)
            self._outcomes[outcome] += count
        self._tally.clear()

    async def report(self) -> None:
        """A line every REPORT_EVERY_S that shows checks flowing, without a line per check."""
        if self._outcomes:
            log.info("checks done", inflight=self._running, **self._outcomes)
            self._outcomes.clear()

    async def run(self, stop: asyncio.Event) -> None:
        open_files_for(self.settings.concurrency)
        for lane in self.lanes:
            await lane.open()
        await self.checker.start()
        await self.clock.sync()
        log.info("executor started", streams=[lane.stream for lane in self.lanes],
                 concurrency=self.settings.concurrency)
        sweep_every = max(0.5, min(5.0, self.settings.claim_idle_ms / 4000))
        for slot in self._slots:
            slot.task = asyncio.create_task(self._worker(slot))
        try:
            await asyncio.gather(
                *(self._reader(lane, stop) for lane in self.lanes),
                *(self._flusher(lane) for lane in self.lanes),
                self._timeouts.run(self._workers_done),
                every(RESYNC_S, stop, self.clock.sync, "clock"),
                every(REFRESH_S, stop, self.guard.refresh, "guard"),
                every(self._beat_s, stop, self.heartbeat, "heartbeat"),
                every(sweep_every, stop, self.sweep, "claim"),
                every(TRIM_EVERY_S, stop, self.forget_gone, "registry"),
                every(TRIM_EVERY_S, stop, self.upkeep, "upkeep"),
                every(METRICS_EVERY_S, stop, self.publish_metrics, "metrics"),
                every(REPORT_EVERY_S, stop, self.report, "report"),
                *([self._meter(self.ceiling)] if self.ceiling is not None else []),
                self._drain(stop),
            )
        finally:
            await self.checker.close()
        log.info("executor stopped")

    async def _drain(self, stop: asyncio.Event) -> None:
        """After SIGTERM: let running checks finish and their results be written, within
        drain_s; checks not started and what is left then stay pending in Redis, for a peer
        or this name's next start, and the executor exits all the same."""
        await stop.wait()
        self._drain_by = time.monotonic() + self.settings.drain_s
        self._stopping = True
        self._room.set()  # a reader waiting for room sees the stop
        self._wanted.set()  # and the ceiling's meter
        self._ready.remove(lambda _: True)  # not started: they stay pending in Redis
        while self._idle:
            self._idle.popleft().set_result(None)
        workers = [slot.task for slot in self._slots if slot.task is not None]
        if self._running:
            log.info("draining in-flight checks", inflight=self._running)
        _, late = await asyncio.wait([*workers, *self._chores], timeout=self.settings.drain_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        self._workers_done.set()
        for lane in self.lanes:
            lane.done_ready.set()
