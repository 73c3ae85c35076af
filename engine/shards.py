"""Which shard a monitor lives in, the same in Python and in Postgres.

A deployment has VIGIL_SHARDS shards, named `0` to `N-1`; each is one Redis Cluster hash tag
(engine.keys), so a cluster spreads shards over its masters. A monitor's shard is the first
32 bits of the MD5 of its id, modulo the count: MD5 because Postgres computes it too
(`md5()`), so a scheduler loads only its shard's rows with the filter in SQL (SQL_EXPR), and
the API routes a push heartbeat to the shard whose executors check it (shard_of).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from engine.keys import Keys

# The shard of `monitors.id` for a count passed as a parameter ($N): an int, like shard_of.
SQL_EXPR = "(('x' || substr(md5(id), 1, 8))::bit(32)::bigint % {count})"


def shard_of(monitor_id: str, count: int) -> str:
    """The name of the shard `monitor_id` lives in, of `count` shards."""
    if count == 1:
        return "0"
    digest = hashlib.md5(monitor_id.encode(), usedforsecurity=False).digest()
    return str(int.from_bytes(digest[:4], "big") % count)


def listed(keys: Keys | Sequence[Keys]) -> list[Keys]:
    """The shards a service is given: one shard's Keys (what tests and a single-shard
    deployment pass) or several."""
    return [keys] if isinstance(keys, Keys) else list(keys)


def all_shards(count: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(count))


def sql_filter(count: int, param: int) -> str:
    """A WHERE clause term: `id`'s shard equals parameter $param (a shard number)."""
    return f"{SQL_EXPR.format(count=int(count))} = ${param}"


@dataclass(frozen=True, slots=True)
class Layout:
    """The shards of a deployment (`count`) and the ones this process serves. A layout of one
    shard may use any Keys (tests give each its own); of several, the shards are 0..N-1."""

    count: int = 1
    served: tuple[Keys, ...] = (Keys("0"),)

    @classmethod
    def of(cls, count: int, served: Iterable[str]) -> Layout:
        return cls(count, tuple(Keys(s) for s in served))

    @classmethod
    def single(cls, keys: Keys) -> Layout:
        return cls(1, (keys,))

    @property
    def all(self) -> tuple[Keys, ...]:
        """Every shard of the deployment, served here or not."""
        return self.served if self.count == 1 else tuple(Keys(s) for s in all_shards(self.count))

    def keys_of(self, monitor_id: str) -> Keys:
        """The keys of the shard `monitor_id` lives in."""
        return self.all[0] if self.count == 1 else Keys(shard_of(monitor_id, self.count))

    def split(self, monitor_ids: Iterable[str]) -> dict[Keys, list[str]]:
        """`monitor_ids` by the shard each lives in."""
        out: dict[Keys, list[str]] = {}
        for monitor_id in monitor_ids:
            out.setdefault(self.keys_of(monitor_id), []).append(monitor_id)
        return out
