"""Schedule math: phases, the first slot, and no drift across scheduler downtimes."""

from __future__ import annotations

import itertools
import math
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.monitors import ID_PATTERN, MIN_INTERVAL_MS
from scheduler.schedule import first_due, next_slot, phase_ms

DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS

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


@given(
    monitor_id=monitor_ids,
    interval_ms=st.integers(min_value=MIN_INTERVAL_MS, max_value=3_600_000),
    start_ms=epoch_ms,
    # Each step is the wait until the scheduler's next tick, in fractions of an interval:
    # mostly short polls, sometimes a downtime of many intervals.
    steps=st.lists(
        st.one_of(st.floats(min_value=0.0, max_value=1.5),
                  st.floats(min_value=1.5, max_value=500.0)),
        min_size=1, max_size=60),
)
@settings(max_examples=300)
def test_no_drift_across_downtimes(
        monitor_id: str, interval_ms: int, start_ms: int, steps: list[float]) -> None:
    phase = phase_ms(monitor_id, interval_ms)
    slot = first_due(monitor_id, interval_ms, start_ms)
    now = start_ms
    dispatched: list[int] = []
    skipped: list[int] = []
    for step in steps:
        now += int(step * interval_ms)
        if slot > now:
            continue  # not due yet: the ZSET score is in the future
        sent, missed = next_slot(slot, interval_ms, now)
        assert missed >= 0
        # The skipped slots are exactly the grid slots between the stored one and the sent one.
        skipped.extend(slot + k * interval_ms for k in range(missed))
        assert sent == slot + missed * interval_ms
        # The slot sent is the latest one at or before now.
        assert now - interval_ms < sent <= now
        dispatched.append(sent)
        slot = sent + interval_ms

    assert all(s % interval_ms == phase for s in dispatched)
    assert all(a < b for a, b in itertools.pairwise(dispatched))
    if dispatched:
        first = first_due(monitor_id, interval_ms, start_ms)
        grid = list(range(first, dispatched[-1] + 1, interval_ms))
        # Dispatched and skipped slots together cover the grid, each slot exactly once.
        assert sorted(dispatched + skipped) == grid
        assert not set(dispatched) & set(skipped)


@given(intervals, epoch_ms, st.data())
@settings(max_examples=300)
def test_a_slot_less_than_an_interval_behind_is_not_skipped(
        interval_ms: int, slot_ms: int, data: st.DataObject) -> None:
    now = slot_ms + data.draw(st.integers(min_value=0, max_value=interval_ms - 1))
    assert next_slot(slot_ms, interval_ms, now) == (slot_ms, 0)


@given(intervals, epoch_ms, st.integers(min_value=1, max_value=10_000), st.data())
@settings(max_examples=300)
def test_whole_intervals_behind_are_skipped(
        interval_ms: int, slot_ms: int, behind: int, data: st.DataObject) -> None:
    extra = data.draw(st.integers(min_value=0, max_value=interval_ms - 1))
    now = slot_ms + behind * interval_ms + extra
    assert next_slot(slot_ms, interval_ms, now) == (slot_ms + behind * interval_ms, behind)


def lua_next_slot(slot: int, interval: int, now: int) -> tuple[int, int]:
    """scheduler/dispatch.lua's arithmetic: Lua numbers are doubles."""
    missed = math.floor(float(now - slot) / float(interval))
    if missed > 0:
        return slot + missed * interval, missed
    return slot, 0


@given(intervals, epoch_ms, st.integers(min_value=0, max_value=10 * YEAR_MS))
@settings(max_examples=500)
def test_dispatch_lua_arithmetic_agrees(interval_ms: int, slot_ms: int, behind_ms: int) -> None:
    now = slot_ms + behind_ms
    assert lua_next_slot(slot_ms, interval_ms, now) == next_slot(slot_ms, interval_ms, now)


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
