"""Schedule math: phases and the first slot (the dispatch script's own arithmetic is tested
on a real redis-server, tests/integration/test_dispatch.py)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.monitors import ID_PATTERN, MIN_INTERVAL_MS
from scheduler.dispatch import IDLE_SLEEP_S, MIN_PERIOD_S, wait_s
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


@given(head_ahead_us=st.integers(min_value=-10_000_000, max_value=10_000_000),
       since_call_us=st.integers(min_value=0, max_value=1_000_000))
def test_the_loop_wakes_at_the_next_slot_at_most_once_a_millisecond(
        head_ahead_us: int, since_call_us: int) -> None:
    """No floor past the call rate: the loop sleeps until the next due time, or until a
    millisecond after the call began if that is later; never past IDLE_SLEEP_S."""
    now_s = 1_700_000_000.0
    head_ms = int(now_s * 1000) + head_ahead_us // 1000
    wait = wait_s(head_ms, now_s, since_call_us / 1e6)
    until_slot = head_ms / 1000 - now_s
    until_period = MIN_PERIOD_S - since_call_us / 1e6
    assert wait <= IDLE_SLEEP_S
    if until_slot >= until_period:
        assert wait == min(until_slot, IDLE_SLEEP_S)  # woken at the slot, no later
    else:
        assert wait == until_period  # a millisecond's slots in one call


def test_a_slot_a_tenth_of_a_millisecond_ahead_is_slept_for_no_longer() -> None:
    assert wait_s(1_000_000_000_001, 1_000_000_000.0009, 0.005) == pytest.approx(0.0001, abs=1e-6)
    assert wait_s(-1, 0.0, 0.0) == IDLE_SLEEP_S
