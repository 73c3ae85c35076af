"""Vigil's own fault suite: the whole pipeline as real processes under random, seeded faults,
then a drain, then the invariants of the architecture (one row per dispatched check, ...)
checked with SQL.

What it starts (127.0.0.1 only, everything stopped by pid): redis-server with an AOF (fsync
every second), an embedded Postgres (migrated), chDB behind a ClickHouse server's HTTP face
(bench/chaos_target.py clickhouse: the ClickHouse sink writes through it over http://, and it
can answer inserts as a failing server does), an HTTP target that logs every request
(bench/chaos_target.py http, answering after 250 ms so checks are in flight when a fault
strikes), then Vigil: two schedulers, three executors, both sinks and the evaluator, each its own
`python -m vigil.cli` process with a stable VIGIL_INSTANCE_ID. --monitors http monitors, one
URL per monitor (its id in the path), every --interval seconds.

Faults (--faults, one at a time, drawn by a random.Random(--seed), for --duration seconds, a
pause of 1-4 s after each):
  kill-role          SIGKILL one of the eight roles, restart it under its name 0.5-3 s later
  stop-executor      SIGSTOP an executor for the claim time (max timeout + grace) + 1-3 s, SIGCONT
  kill-redis         SIGKILL redis-server, restart it from its AOF 1-4 s later
  flushall           FLUSHALL; what Redis held at that moment is read in the same MULTI
  stop-postgres      pg_ctl stop -m fast, start again 2-8 s later
  clickhouse-errors  every insert answered as a failing server (500, X-ClickHouse-Exception-Code:
                     TOO_MANY_PARTS, MEMORY_LIMIT_EXCEEDED, ...) for 1-6 s

How it counts what was dispatched: the run reads the checks and results streams itself
through a group of its own on each, `chaos-audit`, with NOACK (it holds nothing pending, and
safe_trim trims only what every group has read, so no entry goes before the run has read
it), so it knows every check.due by check id and slot and every check.result by check id;
the scheduler's counter (vigil:{0}:stats `dispatched`) restarts at a FLUSHALL, so the run
reads it in the MULTI that flushes and adds it up; both counts must agree.
A FLUSHALL deletes queued work that nothing can bring back: the checks pending or undelivered
in the executors group and the results not yet written by the ClickHouse sink at that moment
are read in the same MULTI and reported as wiped, not as missing.

Drain: faults stop (every process resumed, every server up), the run waits until every monitor
has been dispatched again, SIGTERMs the schedulers, waits until the executors and both sinks
have nothing pending, SIGTERMs them, then reads ClickHouse (chDB, in this process once its
front has stopped), Postgres and Redis. Invariants, each PASS or FAIL with offending ids:
  rows = dispatched       one row per dispatched check id (bar those a FLUSHALL wiped), no other
  each check id once      no check id with two rows (FINAL) or two results on the stream; no
                          slot dispatched twice
  each event once         no evaluation event id written twice to the events stream (the
                          evaluator's state, events and XACK are one step)
  at most twice at target no check's URL requested more than twice (a request counts for the
                          latest slot at or before it, or for the slot before when that
                          check's recorded run started just before it)
  no run recorded expired no check that reached its target recorded `expired`
  status = last result    monitor_status per monitor and region is its last non-expired row
  sinks dead-letter none  no result dead-lettered by a sink (every result here is well formed)
  dispatch recovers       every monitor dispatched again after the last fault
  drained                 nothing left pending in any group
  exit 0 on SIGTERM       every process, and none exited on its own during the run
Also reported, not judged: raw rows (without FINAL), skipped slots, dead letters, restarts,
log lines that are not JSON or at error level, and for each fault the longest time between
two slots of one monitor across it (the interval when no slot was missed).

Run (from the repository root, venv active):
    python bench/chaos.py                                  # every fault, 60 s, 100 monitors
    python bench/chaos.py --faults kill-redis --duration 60 --seed 11   # one fault alone
    python bench/chaos.py --seed 7 --duration 600 --monitors 500 \
        --faults kill-role,stop-executor,flushall,stop-postgres,clickhouse-errors  # 10 minutes
Prints the report (faults with times, figures, invariants) and writes the figures to
bench/out/chaos-<timestamp>.json; exits 1 when an invariant fails, 2 when the run could not go on.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import redis
from chaos_target import DELAY_MS, ChaosStack, Front, Postgres
from procs import (
    BenchError,
    ProcessGroup,
    spawn,
    stop_process,
    vigil,
    wait_until,
    write_figures,
)
from redis.exceptions import RedisError, ResponseError
from stack import (
    KEYS,
    add_load_arguments,
    all_drained,
    groups_exist,
    monitor_ids,
    seed_monitors,
)

from engine.clickhouse import ClickHouse
from engine.events import CheckDue, CheckResult, Event, check_id
from engine.keys import CLICKHOUSE_GROUP, EXECUTOR_GROUP
from engine.streams import EVENT_FIELD, event_of, parse_id
from vigil.accounting import totals

REGION = "default"
CHECKS = KEYS.checks(REGION)
STREAMS = (CHECKS, KEYS.results)
AUDIT_GROUP = "chaos-audit"
TIMEOUT_MS = 500
ARRIVAL_SLACK_MS = 200  # a request reaches the target this soon after its run started
MS = "toUnixTimestamp64Milli"
# The claim idle time (max timeout + grace, 3.5 s) is longer than a role takes to start, so a
# killed executor restarted under its name often finds its own pending checks (its backlog)
# before a peer claims them, and shorter than the interval, so a claimed check runs again
# before its deadline instead of expiring.
ROLE_ENV = {"VIGIL_MAX_TIMEOUT_MS": "1000", "VIGIL_CLAIM_GRACE_MS": "2500",
            "VIGIL_RECONCILE_S": "5", "VIGIL_SINK_FLUSH_MS": "200"}
CLAIM_S = (int(ROLE_ENV["VIGIL_MAX_TIMEOUT_MS"]) + int(ROLE_ENV["VIGIL_CLAIM_GRACE_MS"])) / 1000
RECONCILE_S = int(ROLE_ENV["VIGIL_RECONCILE_S"])
ROLES: dict[str, list[str]] = {
    "scheduler-1": ["scheduler"], "scheduler-2": ["scheduler"],
    "executor-1": ["executor"], "executor-2": ["executor"], "executor-3": ["executor"],
    "sink-status": ["sink", "status"], "sink-clickhouse": ["sink", "clickhouse"],
    "evaluator": ["evaluator"],
}
EXECUTORS = [name for name in ROLES if name.startswith("executor-")]
# Server errors as ClickHouse names them (src/Common/ErrorCodes.cpp): the server's state, not
# the rows, so the same insert succeeds once the server is back.
CLICKHOUSE_ERRORS = ((252, "TOO_MANY_PARTS"), (241, "MEMORY_LIMIT_EXCEEDED"),
                     (159, "TIMEOUT_EXCEEDED"), (242, "TABLE_IS_READ_ONLY"),
                     (210, "NETWORK_ERROR"))
PAUSE_S = (1.0, 4.0)
TICK_S = 0.1
STOP_S = 20.0
DRAIN_S = 45.0
READY_S = 120.0


# --- Vigil's processes --------------------------------------------------------------------------

@dataclass
class Exit:
    name: str
    code: int | str
    at_s: float
    log: str


class Roles(ProcessGroup):
    """The seven roles; a role killed by a fault is restarted under its name by the fault, one
    that exits on its own is recorded and started again a second later."""

    def __init__(self, workdir: Path, env: dict[str, str], clock: Callable[[], float]) -> None:
        super().__init__(workdir, "chaos")
        self.env = env
        self.clock = clock
        self.starts: Counter[str] = Counter()
        self.unexpected: list[Exit] = []
        self.restart_at: dict[str, float] = {}

    def start(self, name: str) -> None:
        n = self.starts[name]
        self.starts[name] += 1
        log = self.logdir / (f"{name}.log" if n == 0 else f"{name}.{n}.log")
        self.procs[name] = spawn(vigil(*ROLES[name]), log, {**self.env, "VIGIL_INSTANCE_ID": name})

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait()

    def signal(self, name: str, sig: signal.Signals) -> None:
        self.procs[name].send_signal(sig)

    def reap(self) -> None:
        """Record a role that exited on its own; start it again a second later."""
        for name, proc in list(self.procs.items()):
            if proc.poll() is not None:
                self.unexpected.append(Exit(name, proc.returncode, self.clock(),
                                            self.log_tail(name, 800)))
                del self.procs[name]
                self.restart_at[name] = time.monotonic() + 1.0
        for name, at in list(self.restart_at.items()):
            if at <= time.monotonic():
                del self.restart_at[name]
                self.start(name)

    def log_path(self, name: str) -> Path:
        n = self.starts[name] - 1
        return self.logdir / (f"{name}.log" if n <= 0 else f"{name}.{n}.log")

    def log_tail(self, name: str, chars: int = 1500) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def up(self, name: str) -> bool:
        """The role logged its start ("scheduler started", "executor started", ...)."""
        path = self.log_path(name)
        return name in self.procs and path.exists() and b' started"' in path.read_bytes()

    def wait_up(self, name: str) -> Iterator[float]:
        """A fault's last step: no fault starts while a role is still starting."""
        deadline = time.monotonic() + READY_S
        while not self.up(name):
            if time.monotonic() > deadline:
                raise BenchError(f"{name} did not start: {self.log_tail(name)}")
            yield TICK_S

    def terminate(self, names: list[str]) -> None:
        for name in names:
            if name in self.procs:
                self.exit_codes[name] = stop_process(self.procs.pop(name), STOP_S)


# --- what the run reads of Redis itself ---------------------------------------------------------

class Audit:
    """Every check.due the schedulers wrote and every check.result the executors wrote, read
    through a group of the run's own on each stream (NOACK: it holds nothing pending, and
    safe_trim trims only what every group has read, so no entry goes before the run has read
    it); the scheduler's counters across FLUSHALLs; what the FLUSHALLs wiped."""

    def __init__(self, port: int) -> None:
        self.r = redis.Redis(port=port, socket_timeout=3, socket_connect_timeout=3)
        for stream in STREAMS:
            self.r.xgroup_create(stream, AUDIT_GROUP, id="0", mkstream=True)
        self.entries = 0
        self.slot_of: dict[str, tuple[str, int]] = {}  # check id -> (monitor id, slot ms)
        self.check_of: dict[bytes, str] = {}  # checks stream entry id -> check id
        self.twice: Counter[str] = Counter()  # check ids dispatched more than once
        self.slots: defaultdict[str, list[int]] = defaultdict(list)
        self.result_ids: set[bytes] = set()
        self.results: Counter[str] = Counter()  # check id -> results written
        self.flushed_stats: Counter[str] = Counter()
        self.wiped: set[str] = set()

    def _checks(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        for entry_id, fields in entries:
            if entry_id in self.check_of:
                continue  # read again: Redis restarted behind this group's last read
            due = CheckDue.from_json(event_of(fields))
            if due.check_id in self.slot_of:
                self.twice[due.check_id] += 1
            self.slot_of[due.check_id] = (due.monitor_id, due.scheduled_ms)
            self.check_of[entry_id] = due.check_id
            bisect.insort(self.slots[due.monitor_id], due.scheduled_ms)
            self.entries += 1

    def _results(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        for entry_id, fields in entries:
            if entry_id not in self.result_ids:
                self.result_ids.add(entry_id)
                self.results[CheckResult.from_json(event_of(fields)).check_id] += 1

    def poll(self) -> None:
        try:
            while True:
                reply: Any = self.r.xreadgroup(AUDIT_GROUP, "chaos",
                                               dict.fromkeys(STREAMS, ">"), count=5_000,
                                               noack=True)
                for stream, entries in reply or []:
                    (self._checks if stream.decode() == CHECKS else self._results)(entries)
                if not reply or max(len(entries) for _, entries in reply) < 5_000:
                    return
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            for stream in STREAMS:  # after a FLUSHALL, once the stream is written again
                with contextlib.suppress(ResponseError):  # BUSYGROUP, or no stream yet
                    self.r.xgroup_create(stream, AUDIT_GROUP, id="0")
        except RedisError:
            pass  # Redis is down or loading: the entries wait for the next poll

    def flushall(self) -> int:
        """FLUSHALL in one MULTI with the reads that say what it deletes: the entries of both
        streams, their groups' pending entries and last delivered ids, the counters. Returns
        how many checks it wiped: pending or undelivered in the executors group, or their
        result not yet written by the ClickHouse sink."""
        pipe = self.r.pipeline(transaction=True)
        for stream, group in ((CHECKS, EXECUTOR_GROUP), (KEYS.results, CLICKHOUSE_GROUP)):
            pipe.xrange(stream)
            pipe.xinfo_groups(stream)
            pipe.xpending_range(stream, group, "-", "+", 1_000_000)
        pipe.hgetall(KEYS.stats)
        pipe.flushall()
        checks, cgroups, cpending, results, rgroups, rpending, stats, _ = [
            [] if isinstance(x, Exception) else x for x in pipe.execute(raise_on_error=False)]
        self._checks(checks)  # those not read yet
        self._results(results)
        wiped = {self.check_of[e] for e in unfinished(cgroups, cpending, EXECUTOR_GROUP,
                                                      [eid for eid, _ in checks])}
        by_entry = {eid: CheckResult.from_json(event_of(f)).check_id for eid, f in results}
        wiped |= {by_entry[e] for e in unfinished(rgroups, rpending, CLICKHOUSE_GROUP,
                                                  list(by_entry))}
        self.flushed_stats.update({k.decode(): int(v) for k, v in dict(stats).items()})
        self.wiped |= wiped
        return len(wiped)

    def stats(self) -> Counter[str]:
        stats: Any = self.r.hgetall(KEYS.stats)
        now = Counter({k.decode(): int(v) for k, v in stats.items()})
        return now + self.flushed_stats

    def dispatched_since(self, ms: int, monitors: list[str]) -> bool:
        return all(self.slots[m] and self.slots[m][-1] >= ms for m in monitors)

    def recovery_s(self, ms: int, monitors: list[str]) -> float | None:
        """Seconds from `ms` until every monitor had a slot at or after it; None if one never."""
        firsts = []
        for m in monitors:
            i = bisect.bisect_left(self.slots[m], ms)
            if i == len(self.slots[m]):
                return None
            firsts.append(self.slots[m][i])
        return (max(firsts) - ms) / 1000

    def longest_gap_s(self, start_ms: int, end_ms: int, monitors: list[str]) -> float | None:
        """The longest time between two slots of one monitor from its last slot before
        `start_ms` to its first at or after `end_ms` (the interval when no slot was missed);
        None when a monitor had no slot after `end_ms`."""
        gap = 0
        for m in monitors:
            slots = self.slots[m]
            i, j = bisect.bisect_left(slots, start_ms), bisect.bisect_left(slots, end_ms)
            if j == len(slots):
                return None
            around = slots[max(i - 1, 0):j + 1]
            gap = max(gap, *(b - a for a, b in itertools.pairwise(around)), 0)
        return gap / 1000


def unfinished(groups: list[dict[str, Any]], pending: list[dict[str, Any]], group: str,
               entry_ids: list[bytes]) -> set[bytes]:
    """Entries of a stream that `group` has not finished: pending, or after its last delivered
    id (everything, when the group is missing)."""
    info = {g["name"].decode(): g for g in groups}
    if group not in info:
        return set(entry_ids)
    last = info[group]["last-delivered-id"]
    return ({p["message_id"] for p in pending}
            | {e for e in entry_ids if parse_id(e) > parse_id(last)})


# --- the faults ---------------------------------------------------------------------------------

@dataclass
class Fault:
    n: int
    kind: str
    start_s: float
    end_s: float = 0.0
    detail: str = ""


class Chaos:
    """One run: the servers, the roles, the audit, the seeded draw and the faults so far."""

    def __init__(self, cfg: argparse.Namespace, workdir: Path) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.t0 = time.time()
        self.stack = ChaosStack(workdir)
        self.roles: Roles | None = None
        self.front: Front | None = None
        self.audit: Audit | None = None
        self.postgres: Postgres | None = None
        self.faults: list[Fault] = []
        self.monitors = monitor_ids(cfg.monitors)

    def elapsed(self) -> float:
        return time.time() - self.t0

    def tick(self, seconds: float) -> None:
        """Wait, reading both streams and reaping roles meanwhile."""
        assert self.audit is not None
        assert self.roles is not None
        end = time.monotonic() + seconds
        while True:
            self.audit.poll()
            self.roles.reap()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(TICK_S, left))

    def near(self, cid: str) -> str:
        """A check id with its slot's time in the run and the first fault that overlapped
        its life (slot to deadline), else the last one before it."""
        assert self.audit is not None
        slot = self.audit.slot_of.get(cid, ("", int(cid.rsplit(":", 1)[-1])))[1]
        at = slot / 1000 - self.t0
        during = [f for f in self.faults if f.start_s <= at + self.cfg.interval and f.end_s >= at]
        before = [f for f in self.faults if f.end_s < at]
        where = (f"with #{during[0].n} {during[0].kind}" if during else
                 f"after #{before[-1].n} {before[-1].kind}" if before else "before any fault")
        return f"{cid} (slot +{at:.1f} s, {where})"


FaultSteps = Iterator[float]  # a fault yields the seconds to wait before its next step


def wait_for_process(proc: subprocess.Popen[bytes], what: str) -> FaultSteps:
    while proc.poll() is None:
        yield TICK_S
    if proc.returncode != 0:
        raise BenchError(f"{what} exited with {proc.returncode}")


def kill_role(c: Chaos, f: Fault) -> FaultSteps:
    assert c.roles is not None
    name = c.rng.choice(sorted(ROLES))
    down = c.rng.uniform(0.5, 3.0)
    f.detail = f"SIGKILL {name}, restarted {down:.1f} s later"
    c.roles.kill(name)
    yield down
    c.roles.start(name)
    yield from c.roles.wait_up(name)


def stop_executor(c: Chaos, f: Fault) -> FaultSteps:
    assert c.roles is not None
    name = c.rng.choice(EXECUTORS)
    stopped = CLAIM_S + c.rng.uniform(1.0, 3.0)
    f.detail = f"SIGSTOP {name} for {stopped:.1f} s, then SIGCONT"
    c.roles.signal(name, signal.SIGSTOP)
    yield stopped
    c.roles.signal(name, signal.SIGCONT)


def kill_redis(c: Chaos, f: Fault) -> FaultSteps:
    down = c.rng.uniform(1.0, 4.0)
    f.detail = f"SIGKILL redis-server, restarted from its AOF {down:.1f} s later"
    c.stack.redis_proc.kill()
    c.stack.redis_proc.wait()
    yield down
    assert c.stack.redis is not None
    c.stack.redis.start()


def flushall(c: Chaos, f: Fault) -> FaultSteps:
    assert c.audit is not None
    wiped = c.audit.flushall()
    f.detail = f"FLUSHALL; {wiped} checks were in Redis only (pending or undelivered)"
    yield 0.0


def stop_postgres(c: Chaos, f: Fault) -> FaultSteps:
    assert c.postgres is not None
    down = c.rng.uniform(2.0, 8.0)
    f.detail = f"pg_ctl stop -m fast, started {down:.1f} s later"
    yield from wait_for_process(c.postgres.stop(), "pg_ctl stop")
    yield down
    yield from wait_for_process(c.postgres.start(), "pg_ctl start")
    c.postgres.started()


def clickhouse_errors(c: Chaos, f: Fault) -> FaultSteps:
    assert c.front is not None
    code, name = c.rng.choice(CLICKHOUSE_ERRORS)
    failing = c.rng.uniform(1.0, 6.0)
    f.detail = f"inserts fail with {code} {name} for {failing:.1f} s"
    c.front.control("fail", code=code, text=f"{name} (injected by bench/chaos.py)")
    yield failing
    c.front.control("recover")


FAULTS: dict[str, Callable[[Chaos, Fault], FaultSteps]] = {
    "kill-role": kill_role, "stop-executor": stop_executor, "kill-redis": kill_redis,
    "flushall": flushall, "stop-postgres": stop_postgres, "clickhouse-errors": clickhouse_errors,
}


def inject(c: Chaos) -> None:
    """Faults one at a time, drawn from the seeded generator, until --duration has passed."""
    end = time.monotonic() + c.cfg.duration
    while time.monotonic() < end:
        fault = Fault(len(c.faults) + 1, c.rng.choice(c.cfg.faults), c.elapsed())
        c.faults.append(fault)
        for wait in FAULTS[fault.kind](c, fault):
            c.tick(wait)
        fault.end_s = c.elapsed()
        print(f"  #{fault.n:<3} +{fault.start_s:6.1f} s .. +{fault.end_s:6.1f} s  "
              f"{fault.kind:<17} {fault.detail}", flush=True)
        c.tick(c.rng.uniform(*PAUSE_S))


# --- the run ------------------------------------------------------------------------------------

def start(c: Chaos) -> None:
    c.stack.start()
    print(f"servers up, migrated: +{c.elapsed():.1f} s", flush=True)
    seed_monitors(c.stack.dsn, c.cfg.monitors, c.cfg.interval_ms, TIMEOUT_MS, c.stack.target_url)
    c.postgres = Postgres(c.stack)
    c.audit = Audit(c.stack.redis_port)  # before the first check.due
    c.front = Front(c.stack.workdir, c.stack.chdb_url)
    env = {**c.stack.env, **ROLE_ENV, "VIGIL_CLICKHOUSE_URL": c.front.url}
    c.roles = Roles(c.stack.workdir, env, c.elapsed)
    for name in ROLES:
        if name != "sink-clickhouse":
            c.roles.start(name)
    c.front.wait_ready()  # the ClickHouse sink asks the server its version at start
    c.roles.start("sink-clickhouse")
    r = c.audit.r

    def ready() -> bool:
        assert c.roles is not None
        c.roles.check_alive()
        return (all(c.roles.up(name) for name in ROLES) and groups_exist(r)
                and c.audit is not None and c.audit.stats()["dispatched"] > 0)

    wait_until(ready, READY_S, "roles ready and first checks dispatched", 0.25)
    print(f"roles up, dispatching: +{c.elapsed():.1f} s", flush=True)
    c.tick(c.cfg.interval)  # every monitor has had its first slot


def drain(c: Chaos) -> dict[str, Any]:
    """Faults are over: wait for dispatch to come back, stop the schedulers, let the rest
    finish, stop it all with SIGTERM."""
    assert c.roles is not None
    assert c.audit is not None
    quiet_ms = int(time.time() * 1000)
    bound = RECONCILE_S + 2 * c.cfg.interval + 5
    deadline = time.monotonic() + bound
    while not c.audit.dispatched_since(quiet_ms, c.monitors) and time.monotonic() < deadline:
        c.tick(0.25)
    c.roles.terminate(["scheduler-1", "scheduler-2"])
    c.audit.poll()

    def drained() -> bool:
        try:
            return all_drained(c.audit.r, evaluator=True)  # type: ignore[union-attr]
        except (RedisError, KeyError):
            return False  # a stream or group is missing

    deadline = time.monotonic() + DRAIN_S
    while not (ok := drained()) and time.monotonic() < deadline:
        c.tick(0.25)
    c.roles.terminate([*EXECUTORS, "sink-status", "sink-clickhouse", "evaluator"])
    return {"quiet_ms": quiet_ms, "recovery_bound_s": bound, "drained": ok}


async def read_stores(chdb_url: str, dsn: str) -> dict[str, Any]:
    ch = ClickHouse.from_url(chdb_url)
    try:
        counts = asdict(await totals(ch))
        rows = await ch.rows(
            f"SELECT check_id, toString(outcome), {MS}(started) FROM check_results FINAL")
        last = await ch.rows(
            "SELECT monitor_id, region, argMax(check_id, scheduled), "
            "argMax(toString(outcome), scheduled) FROM check_results FINAL "
            "WHERE outcome != 'expired' GROUP BY monitor_id, region")
    finally:
        await ch.close()
    conn = await asyncpg.connect(dsn)
    try:
        status = await conn.fetch("SELECT monitor_id, region, status, check_id FROM monitor_status")
    finally:
        await conn.close()
    return {"counts": counts, "rows": Counter(str(row[0]) for row in rows),
            "outcome": {str(cid): str(outcome) for cid, outcome, _ in rows},
            "started": {str(cid): int(t) for cid, outcome, t in rows if outcome != "expired"},
            "last": {(m, rg): (cid, outcome) for m, rg, cid, outcome in last},
            "status": {(s["monitor_id"], s["region"]): (s["check_id"], s["status"])
                       for s in status}}


def runs_per_check(c: Chaos, started: dict[str, int]) -> tuple[Counter[str], int]:
    """The requests the target logged (same host as the executors: one clock), each counted
    for its check: the latest slot of its monitor at or before its arrival, unless the check
    of the slot before has a recorded run that started just before the arrival (a run may
    start until its deadline, slot + interval, and so arrive after the next slot). Also
    returns the requests that came before any slot."""
    assert c.audit is not None
    runs: Counter[str] = Counter()
    stray = 0
    for line in c.stack.requests.read_text().splitlines():
        text, _, path = line.partition(" ")
        at, monitor = int(text), path.rsplit("/", 1)[-1]
        slots = c.audit.slots.get(monitor, [])
        i = bisect.bisect_right(slots, at)
        if i == 0:
            stray += 1
            continue
        cid = check_id(monitor, REGION, slots[i - 1])
        if i >= 2:
            before = check_id(monitor, REGION, slots[i - 2])
            if started.get(before, 0) <= at <= started.get(before, 0) + ARRIVAL_SLACK_MS:
                cid = before
        runs[cid] += 1
    return runs, stray


def log_lines(logdir: Path) -> dict[str, Any]:
    """What the roles logged (VIGIL_LOG_FORMAT=json, every incarnation): lines that are not
    JSON and lines at error level, counted by role, with the first of each."""
    not_json: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    first: dict[str, str] = {}
    for name in ROLES:
        for path in sorted(logdir.glob(f"{name}.*log")):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    not_json[name] += 1
                    first.setdefault("not_json", f"{name}: {line[:200]}")
                    continue
                if event.get("level") in ("error", "critical"):
                    errors[name] += 1
                    first.setdefault("error", f"{name}: {event.get('event')} "
                                              f"{event.get('error', '')}"[:200])
    return {"not_json": dict(not_json), "errors": dict(errors), "first": first}


def deadletters(r: redis.Redis) -> Counter[str]:
    """Dead letters by who wrote them: a sink's reason starts with its name."""
    reasons: Counter[str] = Counter()
    letters: Any = r.xrange(KEYS.deadletter)
    for _, fields in letters:
        reason = fields.get(b"reason", b"").decode(errors="replace")
        head = reason.split(":", 1)[0]
        reasons[head if head in ("status", "clickhouse") else reason[:60]] += 1
    return reasons


# --- the verdict --------------------------------------------------------------------------------

@dataclass
class Verdict:
    name: str
    passed: bool
    detail: str
    offenders: list[str] = field(default_factory=list)


def judge(c: Chaos, drained: dict[str, Any], stores: dict[str, Any], runs: Counter[str],
          letters: Counter[str]) -> list[Verdict]:
    assert c.audit is not None
    assert c.roles is not None
    a = c.audit
    dispatched = set(a.slot_of)
    rows: dict[str, int] = stores["rows"]
    missing = sorted(dispatched - rows.keys() - a.wiped, key=a.slot_of.__getitem__)
    extra = sorted(rows.keys() - dispatched)
    counter = a.stats()["dispatched"]
    twice_rows = sorted(cid for cid, n in rows.items() if n > 1)
    twice_results = sorted(cid for cid, n in a.results.items() if n > 1)
    hammered = sorted(cid for cid, n in runs.items() if n > 2)
    wrong_status = sorted(f"{m}/{rg}: status {stores['status'].get((m, rg))}, last row {last}"
                          for (m, rg), last in stores["last"].items()
                          if stores["status"].get((m, rg)) != last)
    wrong_status += sorted(f"{m}/{rg}: status row without a result"
                           for m, rg in stores["status"].keys() - stores["last"].keys())
    lost_runs = sorted(cid for cid, o in stores["outcome"].items() if o == "expired" and runs[cid])
    sink_letters = {k: v for k, v in letters.items() if k in ("status", "clickhouse")}
    recovered = a.recovery_s(drained["quiet_ms"], c.monitors)
    late = [m for m in c.monitors if not a.slots[m] or a.slots[m][-1] < drained["quiet_ms"]]
    events: Any = a.r.xrange(KEYS.events) if a.r.exists(KEYS.events) else []
    event_ids = Counter(Event.from_json(fields[EVENT_FIELD]).id for _, fields in events)
    twice_events = sorted(eid for eid, n in event_ids.items() if n > 1)
    bad_exits = [f"{n}: {code}" for n, code in c.roles.exit_codes.items() if code != 0]
    bad_exits += [f"{e.name} exited {e.code} on its own at +{e.at_s:.1f} s: "
                  f"{e.log[-300:]!r}" for e in c.roles.unexpected]
    return [
        Verdict("rows = dispatched", not missing and not extra and counter == a.entries,
                f"{len(dispatched):,} check ids dispatched ({a.entries:,} entries read, "
                f"scheduler counter {counter:,}), {len(a.wiped):,} wiped by FLUSHALL, "
                f"{len(rows):,} with a row; {len(missing)} missing, {len(extra)} not dispatched",
                [f"missing {c.near(cid)}" for cid in missing]
                + [f"not dispatched {cid}" for cid in extra]),
        Verdict("each check id once", not twice_rows and not twice_results and not a.twice,
                f"{len(twice_rows)} check ids with more than one row (FINAL), "
                f"{len(twice_results)} with more than one result on the stream, "
                f"{len(a.twice)} slots dispatched more than once",
                [f"{rows[cid]} rows {c.near(cid)}" for cid in twice_rows]
                + [f"{a.results[cid]} results {c.near(cid)}" for cid in twice_results]
                + [f"dispatched {n + 1} times {c.near(cid)}" for cid, n in a.twice.items()]),
        Verdict("each event once", not twice_events,
                f"{sum(event_ids.values()):,} evaluation events, {len(twice_events)} ids "
                "written more than once", twice_events),
        Verdict("at most twice at target", not hammered,
                f"{sum(runs.values()):,} requests for {len(runs):,} checks, "
                f"{sum(1 for n in runs.values() if n == 2)} run twice, {len(hammered)} more",
                [f"{runs[cid]} requests {c.near(cid)}" for cid in hammered]),
        Verdict("no run recorded expired", not lost_runs,
                f"{len(lost_runs)} checks reached their target and are recorded `expired` "
                "(their observation lost to a peer's expired result)",
                [f"{runs[cid]} requests {c.near(cid)}" for cid in lost_runs]),
        Verdict("status = last result", not wrong_status,
                f"{len(stores['status'])} status rows, {len(stores['last'])} monitor/regions "
                f"with a result, {len(wrong_status)} differ", wrong_status),
        Verdict("sinks dead-letter none", not sink_letters,
                f"dead letters by writer: {dict(letters) or 'none'}",
                [f"{k}: {v}" for k, v in sink_letters.items()]),
        Verdict("dispatch recovers", not late,
                f"every monitor dispatched again {recovered:.1f} s after the last fault"
                if recovered is not None else
                f"{len(late)} monitors not dispatched within {drained['recovery_bound_s']} s "
                "of the last fault", late),
        Verdict("drained", drained["drained"],
                "nothing pending in executors, clickhouse or status" if drained["drained"]
                else f"still pending after {DRAIN_S:.0f} s (or a stream or group is missing)"),
        Verdict("exit 0 on SIGTERM", not bad_exits,
                f"{len(c.roles.exit_codes)} processes stopped, {len(c.roles.unexpected)} "
                "exited on their own", bad_exits),
    ]


# --- the report ---------------------------------------------------------------------------------

def figures(c: Chaos, drained: dict[str, Any], stores: dict[str, Any], runs: Counter[str],
            stray: int, letters: Counter[str], logs: dict[str, Any]) -> dict[str, Any]:
    assert c.audit is not None
    assert c.roles is not None
    gaps = {f.n: c.audit.longest_gap_s(int((c.t0 + f.start_s) * 1000),
                                       int((c.t0 + f.end_s) * 1000), c.monitors)
            for f in c.faults}
    return {
        "config": {"faults": c.cfg.faults, "seed": c.cfg.seed, "duration_s": c.cfg.duration,
                   "monitors": c.cfg.monitors, "interval_s": c.cfg.interval,
                   "timeout_ms": TIMEOUT_MS, "target_delay_ms": DELAY_MS, **ROLE_ENV},
        "faults": [asdict(f) | {"longest_gap_s": gaps[f.n]} for f in c.faults],
        "dispatched": c.audit.stats()["dispatched"], "entries_read": c.audit.entries,
        "check_ids": len(c.audit.slot_of), "results_read": len(c.audit.result_ids),
        "skipped": c.audit.stats()["skipped"],
        "wiped_by_flushall": len(c.audit.wiped),
        "wiped_without_row": len(c.audit.wiped - stores["rows"].keys()),
        "clickhouse": stores["counts"], "status_rows": len(stores["status"]),
        "requests": sum(runs.values()) + stray, "requests_before_any_slot": stray,
        "checks_run_twice": sum(1 for n in runs.values() if n == 2),

        "max_runs_per_check": max(runs.values(), default=0),
        "deadletters": dict(letters), "drained": drained["drained"],
        "restarts": {n: k - 1 for n, k in c.roles.starts.items() if k > 1},
        "exit_codes": c.roles.exit_codes, "logs": logs,
        "unexpected_exits": [asdict(e) for e in c.roles.unexpected],
    }


def report(figs: dict[str, Any], verdicts: list[Verdict]) -> str:
    cfg, ch = figs["config"], figs["clickhouse"]
    lines = [f"Vigil chaos run: faults {','.join(cfg['faults'])}, seed {cfg['seed']}, "
             f"{cfg['duration_s']:.0f} s of faults, {cfg['monitors']} monitors every "
             f"{cfg['interval_s']:g} s", f"faults injected: {len(figs['faults'])}"]
    for f in figs["faults"]:
        gap = "none after it" if f["longest_gap_s"] is None else f"{f['longest_gap_s']:.1f} s"
        lines.append(f"  #{f['n']:<3} +{f['start_s']:6.1f} s .. +{f['end_s']:6.1f} s  "
                     f"{f['kind']:<17} {f['detail']}; longest gap between slots: {gap}")
    lines += [
        "figures:",
        f"  dispatched {figs['dispatched']:,} (check.due entries read {figs['entries_read']:,},"
        f" distinct check ids {figs['check_ids']:,}), check.result entries read "
        f"{figs['results_read']:,}, skipped slots {figs['skipped']:,}, "
        f"wiped by FLUSHALL {figs['wiped_by_flushall']:,} ({figs['wiped_without_row']:,} "
        "of them without a row)",
        f"  ClickHouse rows {ch['rows']:,} (FINAL), distinct {ch['unique']:,}, raw rows "
        f"{ch['raw_rows']:,}, outcomes {ch['outcomes']}, inserts refused by the front "
        f"{figs['clickhouse_inserts_refused']:,}",
        f"  status rows {figs['status_rows']}, target requests {figs['requests']:,}, checks "
        f"run twice {figs['checks_run_twice']:,}, most runs of one check "
        f"{figs['max_runs_per_check']}",
        f"  dead letters {figs['deadletters'] or 'none'}, restarts {figs['restarts'] or 'none'}",
        f"  exit codes on SIGTERM {figs['exit_codes']}",
        f"  log lines not JSON {figs['logs']['not_json'] or 'none'}, at error level "
        f"{figs['logs']['errors'] or 'none'}",
        *[f"    first {k}: {v}" for k, v in figs["logs"]["first"].items()],
        "invariants:",
    ]
    for v in verdicts:
        lines.append(f"  {'PASS' if v.passed else 'FAIL'}  {v.name}: {v.detail}")
        lines += [f"        {o}" for o in v.offenders[:10]]
        if len(v.offenders) > 10:
            lines.append(f"        ... and {len(v.offenders) - 10} more")
    passed = all(v.passed for v in verdicts)
    lines.append(f"result: {'PASS' if passed else 'FAIL'}")
    return "\n".join(lines)


def run(cfg: argparse.Namespace) -> tuple[dict[str, Any], list[Verdict]]:
    workdir = Path(tempfile.mkdtemp(prefix="vigil-chaos-"))
    c = Chaos(cfg, workdir)
    ok = False
    try:
        start(c)
        print(f"faults from +0.0 s (seed {cfg.seed}):", flush=True)
        c.t0 = time.time()
        inject(c)
        drained = drain(c)
        print(f"drained and stopped: +{c.elapsed():.1f} s", flush=True)
        assert c.front is not None
        refused = int(c.front.control("refused"))
        stop_process(c.front.proc, STOP_S)  # chDB admits one process: this one, from here
        assert c.stack.target is not None
        stop_process(c.stack.target, STOP_S)
        stores = asyncio.run(read_stores(c.stack.chdb_url, c.stack.dsn))
        print(f"ClickHouse and Postgres read: +{c.elapsed():.1f} s", flush=True)
        runs, stray = runs_per_check(c, stores["started"])
        assert c.audit is not None
        letters = deadletters(c.audit.r)
        verdicts = judge(c, drained, stores, runs, letters)
        figs = figures(c, drained, stores, runs, stray, letters, log_lines(workdir))
        figs["clickhouse_inserts_refused"] = refused
        ok = all(v.passed for v in verdicts)
        return figs, verdicts
    finally:
        if c.roles is not None:
            for proc in c.roles.procs.values():
                proc.kill()
        if c.front is not None:
            stop_process(c.front.proc, STOP_S)
        c.stack.stop()
        if ok and not cfg.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs and data kept in {workdir}", file=sys.stderr)


def fault_list(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in FAULTS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"expected some of {','.join(FAULTS)}")
    return kinds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faults", type=fault_list, default=list(FAULTS),
                    help=f"comma-separated, of {','.join(FAULTS)} (default: all)")
    ap.add_argument("--seed", type=int, default=1)
    add_load_arguments(ap, monitors=100, interval=5.0, duration=60.0)
    ap.add_argument("--keep", action="store_true", help="keep logs and data after a pass")
    cfg = ap.parse_args()
    cfg.interval_ms = int(cfg.interval * 1000)
    try:
        figs, verdicts = run(cfg)
    except BenchError as exc:
        print(f"bench/chaos.py: {exc}", file=sys.stderr)
        return 2
    print(report(figs, verdicts))
    path = write_figures("chaos", {**figs, "invariants": [asdict(v) for v in verdicts]})
    print(f"written to {path}")
    return 0 if all(v.passed for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
