"""`vigil sink clickhouse`: every result into ClickHouse `check_results`, in batches."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.exceptions import OperationalError

from engine.clickhouse import ClickHouse
from engine.events import CheckResult
from engine.keys import CLICKHOUSE_GROUP
from sinks.base import BatchSink

COLUMNS = ("check_id", "monitor_id", "region", "scheduled", "started", "finished", "outcome",
           "latency_ms", "dns_ms", "connect_ms", "tls_ms", "first_byte_ms", "status_code",
           "error_kind", "error", "tls_expiry", "executor", "deliveries", "phases")


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def row(r: CheckResult) -> list[Any]:
    p = r.phases
    return [r.check_id, r.monitor_id, r.region, _ts(r.scheduled_ms), _ts(r.started_ms),
            _ts(r.finished_ms), r.outcome, r.latency_ms, p.get("dns"), p.get("connect"),
            p.get("tls"), p.get("first_byte"), r.status_code, r.error_kind or "", r.error or "",
            _ts(r.tls_expiry_ms) if r.tls_expiry_ms else None, r.executor, r.deliveries, p]


class ClickHouseSink(BatchSink):
    name = "clickhouse"
    group = CLICKHOUSE_GROUP

    def __init__(self, *args: Any, ch: ClickHouse, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ch = ch

    async def write(self, results: list[CheckResult]) -> None:
        await self.ch.insert("check_results", [row(r) for r in results], COLUMNS)

    def transient(self, exc: Exception) -> bool:
        # An OperationalError or a socket error means an absent server: retry. Anything else
        # (a DatabaseError, a value the driver cannot encode) is about the rows themselves.
        return isinstance(exc, OperationalError | OSError)
