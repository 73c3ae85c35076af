"""`vigil sink incidents`: the events stream into Postgres: incidents, the confirmed status
per monitor and region, and its history (engine.incidents holds the SQL, which `vigil replay`
runs too, so a rebuild writes what the live projection writes).

Idempotent and order-safe (engine.incidents): a redelivered event changes nothing, and an
event older than what a row holds never moves it back.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from engine import incidents
from engine.connections import postgres_pool
from engine.events import Event
from engine.keys import PROJECTION_GROUP
from sinks.base import EventSink
from sinks.status import StatusSink


class IncidentsSink(EventSink):
    name = "incidents"
    group = PROJECTION_GROUP

    def __init__(self, *args: Any, postgres_dsn: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.postgres_dsn = postgres_dsn
        self.pool: asyncpg.Pool | None = None

    @staticmethod
    def decode(raw: bytes) -> Event:
        return incidents.checked(Event.from_json(raw))

    async def start(self) -> None:
        self.pool = await postgres_pool(self.postgres_dsn, max_size=2)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def write(self, items: list[Event]) -> None:
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            await incidents.project(conn, items)

    # Postgres errors are judged as the status sink judges them: one list of what is away.
    transient = StatusSink.transient
