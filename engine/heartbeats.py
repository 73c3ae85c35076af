"""Push heartbeats: the API records every one in a per-monitor Redis ZSET scored by time, and
each push check reads the ones it could have seen at its scheduled time (executors.kinds.push
judges them).

A heartbeat's time is Redis server time, taken by the script that records it: an API host
with a wrong clock can neither keep a silent job alive nor make a punctual one look late.
A check reads only heartbeats from before its scheduled time: once Redis's clock is past that
time (the scheduler dispatches by it), no later heartbeat can enter what the check reads, so
every redelivery of one check id sees the same heartbeats and gives the same answer.

Per push monitor, in the shard's slot:
- `keys.beats(id)`: ZSET, member = the record (`{"at_ms", "status", "message"}`, a message
  only on a `down`), score = the time in ms, its microseconds as a fraction (two heartbeats
  in one millisecond keep their order). At most MAX_BEATS members; a heartbeat identical to
  the newest one less than COALESCE_MS after it is not stored, so a client pinging 1,000
  times a second costs one member a second. Each write drops what no check can still read:
  members older than the retention, except the newest of those (a later check reports it as
  the last heartbeat). The key expires after the retention with neither a write nor a check.
- `keys.beats_retention(id)`: STRING, the retention in ms the last check asked for,
  3 intervals + grace (retention_ms); it expires as long after that check. Until a first
  check sets it, heartbeats are kept UNKNOWN_RETENTION_MS.
`forget` deletes both when the scheduler's sync removes a monitor."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import orjson
import redis.asyncio as aioredis

from engine.keys import Keys
from engine.shards import Layout

MESSAGE_MAX = 500
HeartbeatStatus = Literal["up", "down"]
# Where the record script writes the time: a control byte orjson never writes (it escapes
# them in strings), so no status or message can hold one.
AT_MARK = b"\x01"

MAX_BEATS = 1_000
COALESCE_MS = 1_000
# How long heartbeats are kept before any check said what it needs: longer than the interval
# and grace of a monthly job. A check sets the real retention within its first interval.
UNKNOWN_RETENTION_MS = 35 * 86_400_000
FORGET_BATCH = 500

_RECORD = """
-- KEYS[1] the monitor's beats ZSET, KEYS[2] its retention STRING; ARGV[1] the record with \\1
-- where at_ms goes, ARGV[2] the retention while KEYS[2] is unset, ARGV[3] COALESCE_MS,
-- ARGV[4] MAX_BEATS. One script: the time, the write and the trims are one atomic step.
local time = redis.call('TIME')
local ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local at = string.format('%d', ms)
-- The score carries the microseconds, written out (a Lua number would be cut to 14 digits):
-- two heartbeats in one millisecond keep the order they came in.
local score = string.format('%d.%03d', ms, tonumber(time[2]) % 1000)
local retention = tonumber(redis.call('GET', KEYS[2]) or ARGV[2])
local mark = string.find(ARGV[1], '\\1', 1, true)
local head, tail = string.sub(ARGV[1], 1, mark - 1), string.sub(ARGV[1], mark + 1)
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local repeated = false
if newest[1] and ms - tonumber(newest[2]) < tonumber(ARGV[3]) then
  local m = newest[1]
  repeated = #m > #head + #tail and string.sub(m, 1, #head) == head
    and string.sub(m, -#tail) == tail
    and string.match(string.sub(m, #head + 1, -#tail - 1), '^%d+$') ~= nil
end
if not repeated then
  -- (The same record twice in one millisecond is one member, moved to the later score.)
  redis.call('ZADD', KEYS[1], score, head .. at .. tail)
  local last_old = redis.call('ZREVRANGEBYSCORE', KEYS[1], string.format('%d', ms - retention),
                              '-inf', 'LIMIT', 0, 1, 'WITHSCORES')
  if last_old[1] then
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. last_old[2])
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -1 - tonumber(ARGV[4]))
end
redis.call('PEXPIRE', KEYS[1], retention)
return at
"""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One stored heartbeat: api.push records it through Recorder, executors.kinds.push reads it."""

    at_ms: int
    status: HeartbeatStatus = "up"
    message: str | None = None

    @staticmethod
    def template(status: HeartbeatStatus, message: str | None) -> bytes:
        """The stored record with AT_MARK where the recording script puts Redis's time."""
        return orjson.dumps({"at_ms": orjson.Fragment(AT_MARK), "status": status,
                             "message": message})

    @classmethod
    def from_json(cls, raw: bytes | str) -> Heartbeat:
        data = orjson.loads(raw)
        status = data.get("status")
        if not isinstance(data.get("at_ms"), int) or status not in ("up", "down"):
            raise ValueError(f"malformed heartbeat record {data!r}")
        message = data.get("message")
        return cls(at_ms=data["at_ms"], status=status,
                   message=message if isinstance(message, str) else None)


@dataclass(frozen=True, slots=True)
class Seen:
    """What one check may judge: the last heartbeat before its scheduled time, and every
    heartbeat of its own interval, [scheduled - interval, scheduled), oldest first."""

    latest: Heartbeat | None
    interval: list[Heartbeat]


def retention_ms(interval_ms: int, grace_ms: int) -> int:
    """How long a monitor's heartbeats must be kept. A check scheduled at T reads back to
    T - interval - grace and may run until its deadline, T + interval: at any time t, what a
    check can still read starts at t - 2 intervals - grace. One interval more is the margin
    for an executor whose clock runs behind Redis's."""
    return 3 * interval_ms + grace_ms


class Recorder:
    """Records heartbeats at Redis server time, in one script call per heartbeat."""

    def __init__(self, r: aioredis.Redis, keys: Keys | Layout) -> None:
        """`keys`: the shards; a heartbeat goes to its monitor's, where its check runs."""
        self.shards = Layout.single(keys) if isinstance(keys, Keys) else keys
        self._script = r.register_script(_RECORD)

    async def record(self, monitor_id: str, status: HeartbeatStatus,
                     message: str | None) -> int:
        """Record one heartbeat; returns its time (epoch ms, Redis's clock). An `up`'s message
        is not kept: only a failure's is ever shown."""
        record = Heartbeat.template(status, message if status == "down" else None)
        keys = self.shards.keys_of(monitor_id)
        at = await self._script(
            keys=[keys.beats(monitor_id), keys.beats_retention(monitor_id)],
            args=[record, UNKNOWN_RETENTION_MS, COALESCE_MS, MAX_BEATS])
        return int(at)


async def seen(r: aioredis.Redis, keys: Keys, monitor_id: str, scheduled_ms: int,
               interval_ms: int, grace_ms: int) -> Seen:
    """The heartbeats a check scheduled at `scheduled_ms` judges (strictly before it: one in
    the same millisecond may be recorded after the check ran). Also tells the recording
    script how long to keep them, and keeps them that long from now."""
    key = keys.beats(monitor_id)
    keep = retention_ms(interval_ms, grace_ms)
    # One MULTI: both reads see the same set.
    async with r.pipeline(transaction=True) as pipe:
        pipe.zrevrangebyscore(key, f"({scheduled_ms}", "-inf", start=0, num=1)
        pipe.zrangebyscore(key, scheduled_ms - interval_ms, f"({scheduled_ms}")
        pipe.set(keys.beats_retention(monitor_id), keep, px=keep)
        pipe.pexpire(key, keep)
        latest, interval, _, _ = await pipe.execute()
    return Seen(latest=Heartbeat.from_json(latest[0]) if latest else None,
                interval=[Heartbeat.from_json(raw) for raw in interval])


async def forget(r: aioredis.Redis, keys: Keys, monitor_ids: Iterable[str]) -> None:
    """Delete the heartbeats of monitors that are gone (any kind: the keys of a monitor that
    never was a push monitor do not exist)."""
    names = [name for mid in monitor_ids
             for name in (keys.beats(mid), keys.beats_retention(mid))]
    for start in range(0, len(names), FORGET_BATCH):
        await r.delete(*names[start:start + FORGET_BATCH])
