"""A push monitor's heartbeat keys: in its shard's cluster slot, and no other key's name."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from engine.keys import Keys
from engine.monitors import ID_PATTERN

shards = st.text(st.characters(codec="ascii", exclude_characters="{}"), min_size=1, max_size=8)
monitor_ids = st.from_regex(ID_PATTERN, fullmatch=True)


@given(shards, monitor_ids)
@settings(max_examples=200)
def test_heartbeat_keys_are_in_the_shards_slot(shard: str, monitor_id: str) -> None:
    keys = Keys(shard)
    for key in (keys.beats(monitor_id), keys.beats_retention(monitor_id)):
        assert key_slot(key.encode()) == key_slot(shard.encode())


@given(monitor_ids, monitor_ids)
def test_heartbeat_keys_are_distinct(a: str, b: str) -> None:
    keys = Keys()
    names = {keys.beats(a), keys.beats_retention(a), keys.beats(b), keys.beats_retention(b)}
    assert len(names) == (2 if a == b else 4)
    assert not names & {keys.due, keys.plan, keys.stats, keys.results, keys.deadletter}
