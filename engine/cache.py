"""The one bounded cache: at most `max_entries`, each kept for `ttl_s` (None: until evicted),
the least recently used dropped first. For lookups a process repeats (push tokens, API
tokens, parsed specs, resolved names, trust stores), so memory stays bounded however many
distinct keys arrive."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from enum import Enum
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Miss(Enum):
    """What `get` returns for a key it does not hold (a cached value may itself be None)."""

    MISS = 0


MISS = Miss.MISS


class BoundedCache(Generic[K, V]):
    def __init__(self, max_entries: int, ttl_s: float | None = None) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | Miss:
        hit = self._entries.get(key)
        if hit is None:
            return MISS
        if hit[0] <= time.monotonic():
            del self._entries[key]
            return MISS
        self._entries.move_to_end(key)
        return hit[1]

    def put(self, key: K, value: V) -> None:
        expires = float("inf") if self.ttl_s is None else time.monotonic() + self.ttl_s
        self._entries[key] = (expires, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def get_or_load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        hit = self.get(key)
        if hit is not MISS:
            return hit
        value = await load()
        self.put(key, value)
        return value

    def clear(self) -> None:
        self._entries.clear()
