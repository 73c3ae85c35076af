"""Monitors in Postgres: upserts that bump the version only when something changed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from engine.monitors import AnyMonitor

UPSERT = """
INSERT INTO monitors AS m (id, name, kind, interval_ms, timeout_ms, regions, tags, spec, enabled,
    source)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10)
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name, kind = EXCLUDED.kind, interval_ms = EXCLUDED.interval_ms,
    timeout_ms = EXCLUDED.timeout_ms, regions = EXCLUDED.regions, tags = EXCLUDED.tags,
    spec = EXCLUDED.spec, enabled = EXCLUDED.enabled, source = EXCLUDED.source,
    version = m.version + 1, updated_at = now()
WHERE (m.name, m.kind, m.interval_ms, m.timeout_ms, m.regions, m.tags, m.spec, m.enabled,
       m.source)
   IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.kind, EXCLUDED.interval_ms, EXCLUDED.timeout_ms,
       EXCLUDED.regions, EXCLUDED.tags, EXCLUDED.spec, EXCLUDED.enabled, EXCLUDED.source)
RETURNING (xmax = 0) AS created
"""


@dataclass(slots=True)
class ApplyReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


def monitor_row(monitor: AnyMonitor, source: str) -> tuple[Any, ...]:
    body = getattr(monitor, monitor.kind)
    return (monitor.id, monitor.name, monitor.kind, monitor.interval_ms, monitor.timeout_ms,
            monitor.regions, monitor.tags, orjson.dumps(body.model_dump(mode="json")).decode(),
            monitor.enabled, source)


async def upsert_monitors(pool: asyncpg.Pool, monitors: list[AnyMonitor],
                          source: str) -> ApplyReport:
    """All or nothing: one transaction for the whole set."""
    report = ApplyReport()
    async with pool.acquire() as conn, conn.transaction():
        for monitor in monitors:
            created = await conn.fetchval(UPSERT, *monitor_row(monitor, source))
            if created is None:
                report.unchanged += 1
            elif created:
                report.created += 1
            else:
                report.updated += 1
    return report
