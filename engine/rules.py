"""A monitor's evaluation rules as the evaluator reads them: compiled by the scheduler's sync
from the monitor row (its `alerting` with every default filled in) into the rules hash,
in the same step as its plan, so the evaluator reads Redis only."""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields
from typing import Any

import orjson

from engine.monitors import STALE_INTERVALS, Alerting


@dataclass(frozen=True, slots=True, kw_only=True)
class Rules:
    interval_ms: int
    regions: tuple[str, ...]
    quorum: int
    confirm_down: int
    confirm_up: int
    stale_after_ms: int
    flap_changes: int
    flap_window_ms: int
    retry_interval_ms: int | None
    retries: int
    depends_on: tuple[str, ...]

    @classmethod
    def of_row(cls, row: Any) -> Rules:
        """`row` has interval_ms, timeout_ms, regions and alerting (JSON text or a mapping)."""
        raw = row["alerting"]
        alerting = Alerting.model_validate(orjson.loads(raw) if isinstance(raw, str | bytes)
                                           else raw)
        regions = tuple(row["regions"])
        return cls(
            interval_ms=row["interval_ms"], regions=regions,
            quorum=alerting.quorum or len(regions) // 2 + 1,
            confirm_down=alerting.confirm_down, confirm_up=alerting.confirm_up,
            stale_after_ms=alerting.stale_after_ms or (STALE_INTERVALS * row["interval_ms"]
                                                       + row["timeout_ms"]),
            flap_changes=alerting.flap_changes, flap_window_ms=alerting.flap_window_ms,
            retry_interval_ms=alerting.retry_interval_ms, retries=alerting.retries,
            depends_on=tuple(alerting.depends_on))

    def to_json(self) -> bytes:
        """The values in field order, without the names: a million monitors' rules are a
        quarter of the size (engine.keys rules, one entry per monitor)."""
        return orjson.dumps(astuple(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Rules:
        """What to_json wrote, or the object with names an older scheduler wrote (kept until
        the monitor's next change)."""
        data = orjson.loads(raw)
        if isinstance(data, list):
            data = dict(zip(FIELDS, data, strict=True))
        return cls(**{**data, "regions": tuple(data["regions"]),
                      "depends_on": tuple(data["depends_on"])})


FIELDS = tuple(f.name for f in fields(Rules))
