"""bench/compare.py's scoring: the offered load, the slots it expects in a window, and the
figures of a run's results against them, the same for both systems."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from stack import Offered, monitor_ids

from scheduler.schedule import phase_ms

VIGIL, BULLMQ = "vigil", "bullmq"  # the systems, in the order of a pair
LATE_MS = 1000  # a result later than this after its slot is late; on time needs p99 below it

# monitor, scheduled, started, checked (the check's end), finished (its result in Redis: the
# entry's stream id), all ms, and the outcome; see bench/compare.py for each system's sources.
Row = tuple[str, int, int, int, int, str]


@dataclass(frozen=True)
class Load(Offered):
    grace_s: float  # after the window, how long checks scheduled in it may take

    @property
    def timeout_ms(self) -> int:
        return min(5000, self.interval_ms // 2)

    def phases(self) -> dict[str, int]:
        """Monitor -> its slot in the interval: Vigil's phase, given to the peer too."""
        return {m: phase_ms(m, self.interval_ms) for m in monitor_ids(self.monitors)}

    def expected_slots(self, w0: int, w1: int) -> int:
        return sum(slots_in(p, self.interval_ms, w0, w1) for p in self.phases().values())


def slots_in(phase: int, interval: int, w0: int, w1: int) -> int:
    """How many k have phase + k * interval in [w0, w1)."""
    return math.ceil((w1 - phase) / interval) - math.ceil((w0 - phase) / interval)


def quantile(values: list[int], q: float) -> float | None:
    """Exact quantile (nearest rank), as ClickHouse's quantileExact."""
    if not values:
        return None
    return float(values[min(len(values) - 1, int(q * len(values)))])


def score(load: Load, rows: list[Row], w0: int, w1: int,
          deadline: int) -> dict[str, Any]:
    """Expected slots in [w0, w1) against the results that came for them by `deadline`."""
    interval = load.interval_ms
    phases = load.phases()
    expected = load.expected_slots(w0, w1)
    seen: set[tuple[str, int]] = set()
    lags: list[int] = []
    pickups: list[int] = []
    checks: list[int] = []
    writes: list[int] = []
    duplicates = off_grid = after_deadline = 0
    outcomes: Counter[str] = Counter()
    for monitor, scheduled, started, checked, finished, outcome in rows:
        if (monitor, scheduled) in seen:
            duplicates += 1
            continue
        seen.add((monitor, scheduled))
        if monitor not in phases or (scheduled - phases[monitor]) % interval:
            off_grid += 1
            continue
        if not w0 <= scheduled < w1:
            continue
        if finished > deadline:
            after_deadline += 1
            continue
        outcomes[outcome] += 1
        if outcome == "expired":  # Vigil's record of a check that could not run in time
            continue
        lags.append(finished - scheduled)
        pickups.append(started - scheduled)
        checks.append(checked - scheduled)
        writes.append(finished - checked)
    lags.sort()
    pickups.sort()
    checks.sort()
    writes.sort()
    window_s = (w1 - w0) / 1000
    return {
        "expected": expected, "completed": len(lags), "missed": expected - len(lags),
        "late": sum(1 for v in lags if v > LATE_MS), "duplicates": duplicates,
        "off_grid": off_grid, "after_grace": after_deadline, "outcomes": dict(outcomes),
        "expired": outcomes.get("expired", 0),
        "offered_per_s": expected / window_s, "completed_per_s": len(lags) / window_s,
        "lag_ms": {"p50": quantile(lags, 0.5), "p99": quantile(lags, 0.99),
                   "max": float(lags[-1]) if lags else None},
        # started - scheduled: the part of the lag spent before the check began
        "pickup_ms": {"p50": quantile(pickups, 0.5), "p99": quantile(pickups, 0.99)},
        # checked - scheduled: the lag without the result's way into Redis
        "check_lag_ms": {"p50": quantile(checks, 0.5), "p99": quantile(checks, 0.99)},
        # finished - checked: the result's way into Redis, on two clocks (the checker's and
        # Redis's): below 0 the checker's clock is ahead of Redis's
        "write_ms": {"min": float(writes[0]) if writes else None,
                     "p50": quantile(writes, 0.5), "p99": quantile(writes, 0.99)},
    }


def on_time(res: dict[str, Any]) -> bool:
    p99 = res["checks"]["lag_ms"]["p99"]
    return p99 is not None and p99 < LATE_MS and res["checks"]["missed"] == 0
