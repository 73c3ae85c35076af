"""Every Redis key name: one hash tag per shard, so a Lua call or MULTI stays in one slot."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from engine.keys import Keys

REGIONS = ["default", "eu-west", "us_east_1", "ap-2"]
# Redis Cluster hashes only what lies between the first `{` and the next `}`.
shards = st.text(st.characters(codec="ascii", exclude_characters="{}"), min_size=1, max_size=8)


def all_keys(keys: Keys) -> list[str]:
    return [keys.due, keys.plan, keys.stats, keys.results, keys.deadletter,
            *(keys.checks(r) for r in REGIONS)]


def hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes (cluster spec, "hash tags")."""
    start = key.index("{")
    end = key.index("}", start + 1)
    return key[start + 1:end]


def test_default_shard_is_zero() -> None:
    assert Keys().due == "vigil:{0}:due"


@pytest.mark.parametrize("shard", ["0", "1", "eu", "shard-7"])
def test_every_key_carries_the_shard_hash_tag(shard: str) -> None:
    for key in all_keys(Keys(shard)):
        assert f"{{{shard}}}" in key
        assert hash_tag(key) == shard


@given(shards)
@settings(max_examples=100)
def test_every_key_of_a_shard_is_in_one_cluster_slot(shard: str) -> None:
    slots = {key_slot(key.encode()) for key in all_keys(Keys(shard))}
    assert slots == {key_slot(shard.encode())}


@pytest.mark.parametrize("region", REGIONS)
def test_checks_stream_is_the_prefix_plus_the_region(region: str) -> None:
    keys = Keys()
    # dispatch.lua builds the stream name as checks_prefix .. region.
    assert keys.checks(region).startswith(keys.checks_prefix)
    assert keys.checks(region) == keys.checks_prefix + region


def test_key_names_are_distinct() -> None:
    names = all_keys(Keys())
    assert len(set(names)) == len(names)


def test_checks_prefix_is_no_other_key() -> None:
    keys = Keys()
    others = [keys.due, keys.plan, keys.stats, keys.results, keys.deadletter]
    assert not any(name.startswith(keys.checks_prefix) for name in others)


def test_shard_changes_the_tag() -> None:
    zero, one = Keys("0"), Keys("1")
    for a, b in zip(all_keys(zero), all_keys(one), strict=True):
        assert a != b
        assert hash_tag(a) == "0"
        assert hash_tag(b) == "1"
