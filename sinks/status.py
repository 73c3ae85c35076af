"""`vigil sink status`: the current status per monitor and region in Postgres, and the status
history it is derived from.

Idempotent and order-safe: the status row only moves forward in scheduled_ms, so replaying
results, or receiving them out of order, never moves the current status; every result's
status point goes into `status_history` in scheduled_ms order, and `since_ms` is the first
point of the current run of equal statuses there, so a late result that splits the run moves
`since_ms` to where it belongs.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog

from engine.connections import postgres_pool
from engine.events import CheckResult
from engine.keys import STATUS_GROUP
from sinks.base import BatchSink

# The newest result per monitor and region. Its ON CONFLICT locks every row of the batch, in
# the order of the arrays (sorted), even where the WHERE leaves the row as it is: that lock
# is what makes the history step below atomic per monitor and region (a concurrent sink
# waits here until this transaction commits, and then sees all of it).
UPSERT = """
INSERT INTO monitor_status AS s (monitor_id, region, status, since_ms, check_id, scheduled_ms,
    finished_ms, latency_ms, status_code, error_kind, error, updated_at)
SELECT m, rg, st, sch, cid, sch, fin, lat, code, ek, err, now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[],
            $7::float8[], $8::int[], $9::text[], $10::text[])
     AS u(m, rg, st, sch, cid, fin, lat, code, ek, err)
ON CONFLICT (monitor_id, region) DO UPDATE SET
    status = EXCLUDED.status,
    since_ms = CASE WHEN s.status = EXCLUDED.status THEN s.since_ms ELSE EXCLUDED.since_ms END,
    check_id = EXCLUDED.check_id,
    scheduled_ms = EXCLUDED.scheduled_ms,
    finished_ms = EXCLUDED.finished_ms,
    latency_ms = EXCLUDED.latency_ms,
    status_code = EXCLUDED.status_code,
    error_kind = EXCLUDED.error_kind,
    error = EXCLUDED.error,
    updated_at = now()
WHERE s.scheduled_ms < EXCLUDED.scheduled_ms
RETURNING s.monitor_id, s.region, s.status, s.since_ms = s.scheduled_ms AS changed
"""

# The batch's points into the history, and since_ms from it: the first point after `before`,
# the newest point whose status is not the current one. Every read of status_history in this
# statement sees it as it was before the statement (one snapshot), which tells the old points
# from this batch's without scanning the run, however long: at or above the stored since_ms
# only this batch's points can hold another status (the upsert set since_ms to the newest
# point if the status changed), and below it the nearest old point has another status
# (since_ms was right before this batch). So `before` is the newest such batch point or that
# old point, and the first point after it the smaller of a batch slot and one old point: one-
# row index lookups per monitor and region. A slot already in the history keeps its first
# result's status, as monitor_status does. b and n are MATERIALIZED so that each lookup runs
# once per monitor and region, not once per reference. Nothing here depends on the planner's
# guess of the batch size (a prepared statement's generic plan).
HISTORY = """
WITH p AS (SELECT u.m, u.rg, u.sch, COALESCE(h.status, u.st) AS st, h.status IS NULL AS new
           FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) AS u(m, rg, sch, st)
           LEFT JOIN status_history h
             ON h.monitor_id = u.m AND h.region = u.rg AND h.scheduled_ms = u.sch),
added AS (INSERT INTO status_history (monitor_id, region, scheduled_ms, status)
          SELECT m, rg, sch, st FROM p WHERE new
          ON CONFLICT (monitor_id, region, scheduled_ms) DO NOTHING),
k AS (SELECT s.monitor_id, s.region, s.status, s.since_ms, array_agg(p.sch) AS slots,
             max(p.sch) FILTER (WHERE p.st <> s.status) AS other
      FROM p JOIN monitor_status s ON s.monitor_id = p.m AND s.region = p.rg
      GROUP BY s.monitor_id, s.region, s.status, s.since_ms),
b AS MATERIALIZED (SELECT k.monitor_id, k.region, k.slots, GREATEST(k.other, (
          SELECT CASE WHEN h.status <> k.status THEN h.scheduled_ms END
          FROM status_history h
          WHERE h.monitor_id = k.monitor_id AND h.region = k.region
            AND h.scheduled_ms < k.since_ms
          ORDER BY h.scheduled_ms DESC LIMIT 1)) AS before
      FROM k),
n AS MATERIALIZED (SELECT b.monitor_id, b.region, LEAST(
          (SELECT min(slot) FROM unnest(b.slots) AS slot
           WHERE slot > COALESCE(b.before, -9223372036854775808)),
          (SELECT h.scheduled_ms FROM status_history h
           WHERE h.monitor_id = b.monitor_id AND h.region = b.region
             AND h.scheduled_ms > COALESCE(b.before, -9223372036854775808)
           ORDER BY h.scheduled_ms LIMIT 1)) AS since
      FROM b)
UPDATE monitor_status s SET since_ms = n.since
FROM n
WHERE s.monitor_id = n.monitor_id AND s.region = n.region AND s.since_ms <> n.since
"""

log = structlog.get_logger(component="sink.status")


def latest(results: list[CheckResult]) -> list[CheckResult]:
    """The newest result per monitor and region; `expired` says nothing about the target."""
    newest: dict[tuple[str, str], CheckResult] = {}
    for r in results:
        if r.outcome == "expired":
            continue
        key = (r.monitor_id, r.region)
        seen = newest.get(key)
        if seen is None or r.scheduled_ms > seen.scheduled_ms:
            newest[key] = r
    return list(newest.values())


def points(results: list[CheckResult]) -> list[tuple[str, str, int, str]]:
    """(monitor, region, slot, status) of every result but `expired`, sorted, one per slot:
    the first to arrive, as the history keeps it."""
    first: dict[tuple[str, str, int], str] = {}
    for r in results:
        if r.outcome != "expired":
            first.setdefault((r.monitor_id, r.region, r.scheduled_ms), r.outcome)
    return [(*key, status) for key, status in sorted(first.items())]


class StatusSink(BatchSink):
    name = "status"
    group = STATUS_GROUP

    def __init__(self, *args: Any, postgres_dsn: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.postgres_dsn = postgres_dsn
        self.pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        self.pool = await postgres_pool(self.postgres_dsn, max_size=2)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def write(self, results: list[CheckResult]) -> None:
        # Sorted, so concurrent status sinks lock rows in one order and never deadlock.
        rows = sorted(latest(results), key=lambda r: (r.monitor_id, r.region))
        if not rows:
            return
        assert self.pool is not None
        columns = [[getattr(r, name) for r in rows] for name in (
            "monitor_id", "region", "outcome", "scheduled_ms", "check_id", "finished_ms",
            "latency_ms", "status_code", "error_kind", "error")]
        history = [list(column) for column in zip(*points(results), strict=True)]
        # Two statements per batch, whatever its size (unnest turns columns back into rows),
        # in one transaction: the status, its history and since_ms never disagree.
        async with self.pool.acquire() as conn, conn.transaction():
            changed = await conn.fetch(UPSERT, *columns)
            await conn.execute(HISTORY, *history)
        for row in changed:
            if row["changed"]:
                log.info("status changed", monitor_id=row["monitor_id"], region=row["region"],
                         status=row["status"])

    def transient(self, exc: Exception) -> bool:
        return isinstance(exc, OSError | asyncpg.InterfaceError | asyncpg.DeadlockDetectedError
                          | asyncpg.CannotConnectNowError | asyncpg.TooManyConnectionsError
                          | asyncpg.ConnectionDoesNotExistError)
