"""The real dispatch script (scheduler/dispatch.lua) on a real redis-server, held to the
schedule's properties: every event it writes is the check.due the Python side would write,
and across any pattern of scheduler downtimes the slots stay on the grid, each slot either
dispatched or skipped, exactly once. No Python copy of the script's arithmetic."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.events import CheckDue, check_id
from engine.keys import Keys
from engine.monitors import ID_PATTERN, MIN_INTERVAL_MS, REGION_PATTERN
from engine.streams import EVENT_FIELD, event_of
from scheduler.plan import compile_plan
from scheduler.schedule import first_due, phase_ms
from scheduler.service import DISPATCH_SCRIPT

monitor_ids = st.from_regex(ID_PATTERN, fullmatch=True)
regions = st.from_regex(REGION_PATTERN, fullmatch=True)
epoch_ms = st.integers(min_value=0, max_value=2**43)
texts = st.text(st.characters(codec="utf-8"), max_size=30)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=10)
specs = st.dictionaries(texts, json_values, max_size=5)
KEYS = Keys("dispatch-test")
# Hypothesis runs many examples against one server: each starts from empty keys.
PROPERTY = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


class Lua:
    """The script as the scheduler calls it, on a sync client (hypothesis drives sync tests)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.script = client.register_script(DISPATCH_SCRIPT)

    def reset(self) -> None:
        self.client.delete(KEYS.due, KEYS.plan, KEYS.stats,
                           *self.client.keys(f"{KEYS.checks_prefix}*"))

    def seed(self, row: dict[str, Any], slot: int) -> None:
        self.client.hset(KEYS.plan, row["id"], compile_plan(row))
        self.client.zadd(KEYS.due, {row["id"]: slot})

    def dispatch(self, now: int) -> tuple[int, int]:
        dispatched, skipped, _, _ = self.script(
            keys=[KEYS.due, KEYS.plan, KEYS.stats],
            args=[now, 1_000, KEYS.checks_prefix, EVENT_FIELD])
        return int(dispatched), int(skipped)

    def events(self, region: str) -> list[tuple[bytes, CheckDue]]:
        return [(event_of(fields), CheckDue.from_json(event_of(fields)))
                for _, fields in self.client.xrange(KEYS.checks(region))]


@pytest.fixture
def lua(redis_url: str) -> Iterator[Lua]:
    client = redis.Redis.from_url(redis_url)
    yield Lua(client)
    client.close()


def row_of(monitor_id: str, region_list: list[str], interval_ms: int, version: int,
           spec: Any) -> dict[str, Any]:
    return {"id": monitor_id, "kind": "tcp", "interval_ms": interval_ms,
            "timeout_ms": interval_ms - 1, "regions": region_list, "spec": spec,
            "version": version}


@given(monitor_ids, st.lists(regions, min_size=1, max_size=4, unique=True),
       st.integers(min_value=MIN_INTERVAL_MS, max_value=86_400_000),
       st.integers(min_value=0, max_value=2**50), epoch_ms, specs, st.booleans())
@PROPERTY
def test_every_event_is_the_check_due_python_writes(
        lua: Lua, monitor_id: str, region_list: list[str], interval_ms: int, version: int,
        slot: int, spec: dict[str, Any], as_text: bool) -> None:
    """The spec reaches the plan as Postgres's JSON text or as a mapping; either way the
    script's bytes are one check.due per region, equal to what CheckDue.to_json writes."""
    lua.reset()
    stored = orjson.dumps(spec).decode() if as_text else spec
    lua.seed(row_of(monitor_id, region_list, interval_ms, version, stored), slot)
    assert lua.dispatch(slot) == (len(region_list), 0)
    for region in region_list:
        [(raw, event)] = lua.events(region)
        assert event == CheckDue(
            check_id=check_id(monitor_id, region, slot), monitor_id=monitor_id, region=region,
            scheduled_ms=slot, deadline_ms=slot + interval_ms, interval_ms=interval_ms,
            timeout_ms=interval_ms - 1, spec_version=version, kind="tcp", spec=spec)
        assert orjson.loads(raw) == orjson.loads(event.to_json())


@given(
    monitor_id=monitor_ids,
    interval_ms=st.integers(min_value=MIN_INTERVAL_MS, max_value=3_600_000),
    start_ms=epoch_ms,
    # Each step is the wait until the scheduler's next call, in fractions of an interval:
    # mostly short polls, sometimes a downtime of many intervals.
    steps=st.lists(st.one_of(st.floats(min_value=0.0, max_value=1.5),
                             st.floats(min_value=1.5, max_value=500.0)),
                   min_size=1, max_size=40),
)
@PROPERTY
def test_no_drift_and_each_slot_once_across_downtimes(
        lua: Lua, monitor_id: str, interval_ms: int, start_ms: int, steps: list[float]) -> None:
    lua.reset()
    first = first_due(monitor_id, interval_ms, start_ms)
    lua.seed(row_of(monitor_id, ["default"], interval_ms, 1, {}), first)
    now, skipped_total, sent_at = start_ms, 0, []
    for step in steps:
        now += int(step * interval_ms)
        before = len(lua.events("default"))
        dispatched, skipped = lua.dispatch(now)
        skipped_total += skipped
        events = lua.events("default")[before:]
        assert len(events) == dispatched <= 1
        for _, event in events:
            # The slot sent is the latest one at or before now.
            assert now - interval_ms < event.scheduled_ms <= now
            assert event.deadline_ms == event.scheduled_ms + interval_ms
            sent_at.append(event.scheduled_ms)
    sent = sent_at
    phase = phase_ms(monitor_id, interval_ms)
    assert all(s % interval_ms == phase for s in sent)
    assert all(a < b for a, b in itertools.pairwise(sent))
    if sent:
        # Dispatched and skipped slots together cover the grid up to the last one sent.
        assert len(range(first, sent[-1] + 1, interval_ms)) == len(sent) + skipped_total
    stats = lua.client.hgetall(KEYS.stats)
    assert int(stats.get(b"skipped", 0)) == skipped_total


@given(st.integers(min_value=MIN_INTERVAL_MS, max_value=30 * 86_400_000), epoch_ms,
       st.integers(min_value=0, max_value=10 * 365 * 86_400_000))
@PROPERTY
def test_the_slot_sent_after_any_delay_is_on_the_grid(lua: Lua, interval_ms: int, slot: int,
                                                       behind_ms: int) -> None:
    """Lua numbers are doubles: the arithmetic must stay exact for ten years behind."""
    lua.reset()
    lua.seed(row_of("m", ["default"], interval_ms, 1, {}), slot)
    dispatched, skipped = lua.dispatch(slot + behind_ms)
    [(_, event)] = lua.events("default")
    assert (dispatched, skipped) == (1, behind_ms // interval_ms)
    assert event.scheduled_ms == slot + (behind_ms // interval_ms) * interval_ms
    assert event.check_id == check_id("m", "default", event.scheduled_ms)
