"""Schedule math: phases and the first slot (the dispatch script's own arithmetic is tested
on a real redis-server, tests/integration/test_dispatch.py)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.monitors import ID_PATTERN, MIN_INTERVAL_MS
from scheduler.schedule import first_due, phase_ms

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


@given(monitor_ids, intervals, epoch_ms)
@settings(max_examples=300)
def test_first_due_is_the_next_slot_on_the_grid(
        monitor_id: str, interval_ms: int, now_ms: int) -> None:
    due = first_due(monitor_id, interval_ms, now_ms)
    assert now_ms <= due < now_ms + interval_ms
    assert due % interval_ms == phase_ms(monitor_id, interval_ms)


@given(monitor_ids, intervals, epoch_ms)
@settings(max_examples=100)
def test_first_due_is_the_same_for_every_scheduler(
        monitor_id: str, interval_ms: int, now_ms: int) -> None:
    """Two schedulers starting at different moments of one interval agree on the slot."""
    due = first_due(monitor_id, interval_ms, now_ms)
    for later in (now_ms + 1, due - 1, due):
        if now_ms <= later <= due:
            assert first_due(monitor_id, interval_ms, later) == due


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
