"""`vigil sink status`: the current status per monitor and region in Postgres.

Idempotent and order-safe: a row only moves forward in scheduled_ms, so replaying results,
or receiving them out of order, changes nothing.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog

from engine.connections import postgres_pool
from engine.events import CheckResult
from engine.keys import STATUS_GROUP
from sinks.base import BatchSink

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
        # One statement per batch: unnest turns the columns back into rows.
        for row in await self.pool.fetch(UPSERT, *columns):
            if row["changed"]:
                log.info("status changed", monitor_id=row["monitor_id"], region=row["region"],
                         status=row["status"])

    def transient(self, exc: Exception) -> bool:
        return isinstance(exc, OSError | asyncpg.InterfaceError | asyncpg.DeadlockDetectedError
                          | asyncpg.CannotConnectNowError | asyncpg.TooManyConnectionsError
                          | asyncpg.ConnectionDoesNotExistError)
