"""The bounded cache every lookup shares: size bound, least recently used out first, TTL."""

from __future__ import annotations

import pytest

from engine import cache
from engine.cache import MISS, BoundedCache


def test_bounded_and_least_recently_used_goes_first():
    c: BoundedCache[str, int] = BoundedCache(2)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1  # a is now the most recently used
    c.put("c", 3)
    assert (c.get("a"), c.get("b"), c.get("c"), len(c)) == (1, MISS, 3, 2)


def test_a_cached_none_is_a_hit():
    c: BoundedCache[str, int | None] = BoundedCache(10)
    c.put("unknown", None)
    assert c.get("unknown") is None
    assert c.get("other") is MISS


def test_entries_expire_after_the_ttl(monkeypatch: pytest.MonkeyPatch):
    now = [100.0]
    monkeypatch.setattr(cache.time, "monotonic", lambda: now[0])
    c: BoundedCache[str, int] = BoundedCache(10, ttl_s=30)
    c.put("a", 1)
    now[0] += 29.9
    assert c.get("a") == 1
    now[0] += 0.2
    assert c.get("a") is MISS
    assert len(c) == 0


async def test_get_or_load_loads_once_per_key():
    c: BoundedCache[str, str | None] = BoundedCache(10)
    calls: list[str] = []

    async def load(key: str) -> str | None:
        calls.append(key)
        return None if key == "missing" else key.upper()

    for _ in range(3):
        assert await c.get_or_load("a", lambda: load("a")) == "A"
        assert await c.get_or_load("missing", lambda: load("missing")) is None
    assert calls == ["a", "missing"]
