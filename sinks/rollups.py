"""The settle step of the ClickHouse rollups (migration 0007), run by the ClickHouse sink role:
every few minutes, closed hours are made equal to the raw rows with FINAL
(engine.rollups.settle) and the settled mark moves on.

One settler per database: two at once could insert the same correction twice, which the next
run takes back out, so it rides with the ClickHouse sink, of which a deployment runs one.
"""

from __future__ import annotations

import asyncio

import structlog

from engine import rollups
from engine.clickhouse import ClickHouse
from engine.service import every

log = structlog.get_logger(component="rollups")

EVERY_S = 300.0
# An hour is closed this long after it ends: the sink writes in batches of seconds, and a
# result written later still reaches the rollups through the view (only a duplicate needs the
# next run's look back).
GRACE_MS = 10 * 60_000


class RollupSettler:
    name = "rollups-settle"

    def __init__(self, ch: ClickHouse, every_s: float = EVERY_S) -> None:
        self.ch = ch
        self.every_s = every_s
        self.marks: dict[str, int] = {}

    async def settle_once(self) -> dict[str, int]:
        # The database's clock, not this host's: the rows' hours are the ones it holds.
        now_ms = int((await self.ch.rows("SELECT toUnixTimestamp64Milli(now64(3))"))[0][0])
        marks = await rollups.settle(self.ch, now_ms - GRACE_MS)
        if marks != self.marks:
            log.info("rollups settled", **{f"{k}_through_ms": v for k, v in marks.items()})
            self.marks = marks
        return marks

    async def run(self, stop: asyncio.Event) -> None:
        await every(self.every_s, stop, self.settle_once, self.name)
