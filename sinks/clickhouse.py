"""`vigil sink clickhouse`: every result into ClickHouse `check_results`, in batches.

A check written twice (this sink's redelivery, a late re-run's `expired`) is folded by the
table, not here: its `precedence` column (migration 0003) keeps the first real observation,
whichever row was written last.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.exceptions import ClickHouseError, DataError

from engine.clickhouse import ClickHouse
from engine.events import CheckResult
from engine.keys import CLICKHOUSE_GROUP
from sinks.base import BatchSink

COLUMNS = ("check_id", "monitor_id", "region", "scheduled", "started", "finished", "outcome",
           "latency_ms", "dns_ms", "connect_ms", "tls_ms", "first_byte_ms", "status_code",
           "error_kind", "error", "tls_expiry", "executor", "deliveries", "phases", "maintenance")


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def row(r: CheckResult) -> list[Any]:
    p = r.phases
    return [r.check_id, r.monitor_id, r.region, _ts(r.scheduled_ms), _ts(r.started_ms),
            _ts(r.finished_ms), r.outcome, r.latency_ms, p.get("dns"), p.get("connect"),
            p.get("tls"), p.get("first_byte"), r.status_code, r.error_kind or "", r.error or "",
            _ts(r.tls_expiry_ms) if r.tls_expiry_ms else None, r.executor, r.deliveries, p,
            r.maintenance]


class ClickHouseSink(BatchSink):
    name = "clickhouse"
    group = CLICKHOUSE_GROUP

    def __init__(self, *args: Any, ch: ClickHouse, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ch = ch

    async def write(self, results: list[CheckResult]) -> None:
        await self.ch.insert("check_results", [row(r) for r in results], COLUMNS)

    def transient(self, exc: Exception) -> bool:
        return not about_the_rows(exc)


# ClickHouse error codes (src/Common/ErrorCodes.cpp) that the rows themselves cause: only these
# split a batch to find the bad results. Every other server error (TOO_MANY_PARTS,
# MEMORY_LIMIT_EXCEEDED, TIMEOUT_EXCEEDED, TABLE_IS_READ_ONLY, a server shutting down, a
# code this list does not know) is the server's state: the same rows succeed later.
DATA_ERROR_CODES = frozenset({
    6,    # CANNOT_PARSE_TEXT
    26,   # CANNOT_PARSE_QUOTED_STRING
    27,   # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,   # CANNOT_PARSE_DATE
    41,   # CANNOT_PARSE_DATETIME
    53,   # TYPE_MISMATCH
    69,   # ARGUMENT_OUT_OF_BOUND
    70,   # CANNOT_CONVERT_TYPE
    72,   # CANNOT_PARSE_NUMBER
    117,  # INCORRECT_DATA
    131,  # TOO_LARGE_STRING_SIZE
    321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
})


def about_the_rows(exc: Exception) -> bool:
    """Whether retrying the same rows must fail again: a value the driver cannot encode
    (found before anything is sent), or a server error whose code says the data is bad."""
    if isinstance(exc, ValueError | TypeError | OverflowError):
        return True
    if isinstance(exc, ClickHouseError):
        code = getattr(exc, "code", None)
        return code in DATA_ERROR_CODES if code is not None else isinstance(exc, DataError)
    return False
