"""`vigil sink status-events`: every confirmed status change (status.changed per region,
monitor.changed as region `*`) from the events stream into ClickHouse `status_events`, the
downtime intervals of SLA figures (engine.incidents.DOWNTIME_SQL).

A redelivered event is the same row under the same sort key, folded by the table
(ReplacingMergeTree, read with FINAL); the other event types are acknowledged and skipped.
"""

from __future__ import annotations

from typing import Any

from engine.clickhouse import ClickHouse
from engine.events import Event
from engine.incidents import CHANGES, checked, region_of
from engine.keys import EVENTS_CLICKHOUSE_GROUP
from sinks.base import EventSink
from sinks.clickhouse import _ts, about_the_rows

COLUMNS = ("event_id", "type", "monitor_id", "region", "status", "previous", "at", "check_id",
           "maintenance")


def row(e: Event) -> list[Any]:
    return [e.id, e.type, e.monitor_id, region_of(e), e.status, e.previous or "", _ts(e.at_ms),
            e.check_id or "", e.maintenance]


class StatusEventsSink(EventSink):
    name = "status-events"
    group = EVENTS_CLICKHOUSE_GROUP

    def __init__(self, *args: Any, ch: ClickHouse, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ch = ch

    @staticmethod
    def decode(raw: bytes) -> Event:
        return checked(Event.from_json(raw))

    async def write(self, items: list[Event]) -> None:
        rows = [row(e) for e in items if e.type in CHANGES]
        if rows:
            await self.ch.insert("status_events", rows, COLUMNS)

    def transient(self, exc: Exception) -> bool:
        return not about_the_rows(exc)
