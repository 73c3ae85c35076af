"""Schedule math: phases and the first slot (the dispatch script's own arithmetic is tested
on a real redis-server, tests/integration/test_dispatch.py)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.monitors import ID_PATTERN, MIN_INTERVAL_MS
from scheduler.schedule import phase_ms

DAY_MS = 86_400_000

monitor_ids = st.from_regex(ID_PATTERN, fullmatch=True)
intervals = st.integers(min_value=MIN_INTERVAL_MS, max_value=30 * DAY_MS)
# Epoch milliseconds from 1970 to roughly 2250.
epoch_ms = st.integers(min_value=0, max_value=2**43)


@given(monitor_ids, intervals)
@settings(max_examples=300)
def test_phase_is_within_the_interval_and_stable(monitor_id: str, interval_ms: int) -> None:
    phase = phase_ms(monitor_id, interval_ms)
    assert 0 <= phase < interval_ms
    assert phase_ms(monitor_id, interval_ms) == phase


def test_ten_thousand_monitors_spread_their_phases() -> None:
    interval_ms = 10_000
    phases = [phase_ms(f"monitor-{i}", interval_ms) for i in range(10_000)]

    per_ms = Counter(phases)
    assert max(per_ms.values()) <= 10  # Poisson(1) would give about 7

    buckets = Counter(p // 100 for p in phases)
    mean = len(phases) / (interval_ms // 100)
    assert len(buckets) == interval_ms // 100  # no empty 100 ms bucket
    assert max(buckets.values()) <= 2 * mean
    assert min(buckets.values()) >= mean / 2
