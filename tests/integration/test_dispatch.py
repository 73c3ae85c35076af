"""The real scheduling scripts (scheduler/dispatch.lua, sync.lua) on a real redis-server, at
Redis time, held to the schedule's properties: every event is the check.due the Python side
would write; after any downtime the latest slot on the grid goes and each earlier one is
counted as skipped, once; a new monitor starts on its grid. No Python copy of the scripts'
arithmetic."""

from __future__ import annotations

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
from scheduler.dispatch import DISPATCH_SCRIPT
from scheduler.plan import compile_plan
from scheduler.schedule import phase_ms
from scheduler.sync import SYNC_SCRIPT

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
    """The script as the scheduler calls it, on a sync client (hypothesis drives sync tests).
    The script reads Redis time itself: examples place slots relative to it."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.script = client.register_script(DISPATCH_SCRIPT)
        # The regions whose streams a call declares, as the Dispatcher keeps them.
        self.regions: set[str] = set()

    def reset(self) -> None:
        self.regions = set()
        self.client.delete(KEYS.due, KEYS.plan, KEYS.shapes, KEYS.stats, KEYS.regions,
                           *self.client.keys(f"{KEYS.checks_prefix}*"))

    def now(self) -> int:
        seconds, micros = self.client.time()
        return int(seconds * 1000 + micros // 1000)

    def seed(self, row: dict[str, Any], slot: int) -> None:
        plan = compile_plan(row)
        self.client.hset(KEYS.plan, row["id"], plan.plan)
        self.client.hset(KEYS.shapes, plan.digest, plan.shape)
        self.client.zadd(KEYS.due, {row["id"]: slot})
        self.regions.update(row["regions"])

    def call(self, regions: list[str]) -> list[Any]:
        result: list[Any] = self.script(
            keys=[KEYS.due, KEYS.plan, KEYS.stats, KEYS.maintenance, KEYS.retries, KEYS.paused,
                  KEYS.shapes,
                  *(KEYS.checks(region) for region in regions)],
            args=[1_000, EVENT_FIELD, *regions])
        return result

    def dispatch(self) -> tuple[int, int]:
        dispatched, skipped, *_, undeclared = self.call(sorted(self.regions))
        assert undeclared == []
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
       st.integers(min_value=0, max_value=2**50), specs, st.booleans())
@PROPERTY
def test_every_event_is_the_check_due_python_writes(
        lua: Lua, monitor_id: str, region_list: list[str], interval_ms: int, version: int,
        spec: dict[str, Any], as_text: bool) -> None:
    """The spec reaches the plan as Postgres's JSON text or as a mapping; either way the
    script's bytes are one check.due per region, equal to what CheckDue.to_json writes."""
    lua.reset()
    slot = lua.now() - 1
    stored = orjson.dumps(spec).decode() if as_text else spec
    lua.seed(row_of(monitor_id, region_list, interval_ms, version, stored), slot)
    assert lua.dispatch() == (len(region_list), 0)
    for region in region_list:
        [(raw, event)] = lua.events(region)
        assert event == CheckDue(
            check_id=check_id(monitor_id, region, slot), monitor_id=monitor_id, region=region,
            scheduled_ms=slot, deadline_ms=slot + interval_ms, interval_ms=interval_ms,
            timeout_ms=interval_ms - 1, spec_version=version, kind="tcp", spec=spec)
        assert orjson.loads(raw) == orjson.loads(event.to_json())


@given(interval_ms=st.integers(min_value=MIN_INTERVAL_MS, max_value=30 * 86_400_000),
       behind=st.integers(min_value=0, max_value=5_000),
       # Where in an interval "now" falls, kept clear of its edges: the test's Redis time
       # reading and the script's are a few ms apart.
       within=st.floats(min_value=0.05, max_value=0.95))
@PROPERTY
def test_after_any_downtime_the_latest_slot_goes_and_the_rest_are_skipped(
        lua: Lua, interval_ms: int, behind: int, within: float) -> None:
    """A slot `behind` whole intervals (and a part of one) in the past: the script sends the
    latest slot on the grid, counts the ones before as skipped, re-adds the monitor at the
    next slot, and sends nothing more until then. Lua numbers are doubles: exact for years."""
    lua.reset()
    slot = lua.now() - behind * interval_ms - int(within * interval_ms)
    lua.seed(row_of("m", ["default"], interval_ms, 1, {}), slot)
    assert lua.dispatch() == (1, behind)
    [(_, event)] = lua.events("default")
    sent = slot + behind * interval_ms
    assert (event.scheduled_ms, event.deadline_ms) == (sent, sent + interval_ms)
    assert event.check_id == check_id("m", "default", sent)
    assert lua.client.zscore(KEYS.due, "m") == sent + interval_ms
    assert lua.dispatch() == (0, 0)
    assert int(lua.client.hget(KEYS.stats, "skipped") or 0) == behind


@given(monitor_ids, st.integers(min_value=MIN_INTERVAL_MS, max_value=30 * 86_400_000))
@PROPERTY
def test_a_new_monitor_is_placed_on_its_grid_at_or_after_now(lua: Lua, monitor_id: str,
                                                             interval_ms: int) -> None:
    """scheduler/sync.lua: the first slot is phase + k * interval, at or after Redis time."""
    lua.reset()
    lua.client.delete(KEYS.revisions, KEYS.tombstones)
    sync = lua.client.register_script(SYNC_SCRIPT)
    before = lua.now()
    sync(keys=[KEYS.due, KEYS.plan, KEYS.revisions, KEYS.tombstones, KEYS.rules, KEYS.regions,
               KEYS.shapes],
         args=[0, monitor_id,
               compile_plan(row_of(monitor_id, ["default"], interval_ms, 1, {})).plan,
               phase_ms(monitor_id, interval_ms), 1, b"{}"])
    first = int(lua.client.zscore(KEYS.due, monitor_id))
    assert before <= first < lua.now() + interval_ms
    assert first % interval_ms == phase_ms(monitor_id, interval_ms)


def test_a_plan_naming_an_undeclared_stream_stops_the_call_unchanged(lua: Lua) -> None:
    """Redis Cluster: a script touches only keys it declares. A due plan whose region's stream
    the call did not declare: nothing is sent, popped or counted, and the region is named."""
    lua.reset()
    slot = lua.now() - 1
    lua.seed(row_of("a", ["eu"], 60_000, 1, {}), slot)
    lua.seed(row_of("b", ["eu", "us"], 60_000, 1, {}), slot)
    dispatched, skipped, popped, _, _, held, undeclared = lua.call(["eu"])
    assert (dispatched, skipped, popped, held, undeclared) == (0, 0, 0, 0, [b"us"])
    assert lua.client.zrange(KEYS.due, 0, -1, withscores=True) == [(b"a", slot), (b"b", slot)]
    assert lua.client.keys(f"{KEYS.checks_prefix}*") == []
    assert lua.client.hgetall(KEYS.stats) == {}
    assert lua.dispatch() == (3, 0)


@given(st.lists(st.lists(regions, min_size=1, max_size=3, unique=True), min_size=1,
                max_size=5))
@PROPERTY
def test_the_sync_adds_every_region_a_plan_names(lua: Lua,
                                                  region_lists: list[list[str]]) -> None:
    """scheduler/sync.lua adds the regions of each plan it writes to Keys.regions, in the same
    step, so the dispatch script is given every stream a plan can send to."""
    lua.reset()
    lua.client.delete(KEYS.revisions, KEYS.tombstones)
    sync = lua.client.register_script(SYNC_SCRIPT)
    args: list[Any] = []
    for i, region_list in enumerate(region_lists):
        mid = f"m{i}"
        args += [mid, compile_plan(row_of(mid, region_list, 60_000, 1, {})).plan,
                 phase_ms(mid, 60_000), 1, b"{}"]
    sync(keys=[KEYS.due, KEYS.plan, KEYS.revisions, KEYS.tombstones, KEYS.rules, KEYS.regions,
               KEYS.shapes],
         args=[0, *args])
    named = {region for region_list in region_lists for region in region_list}
    assert lua.client.smembers(KEYS.regions) == {region.encode() for region in named}
