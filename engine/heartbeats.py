"""Push heartbeats: the API records every one in a per-monitor Redis ZSET scored by time
(`keys.beats(monitor_id)`), and each push check reads the ones it could have seen at its
scheduled time (executors.kinds.push judges them).

A heartbeat's time is Redis server time, taken by the script that records it: an API host
with a wrong clock can neither keep a silent job alive nor make a punctual one look late.
A check reads only heartbeats from before its scheduled time: once Redis's clock is past that
time (the scheduler dispatches by it), no later heartbeat can enter what the check reads, so
every redelivery of one check id sees the same heartbeats and gives the same answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import orjson
import redis.asyncio as aioredis

from engine.keys import Keys

MESSAGE_MAX = 500
HeartbeatStatus = Literal["up", "down"]
# Where the record script writes the time: a control byte orjson never writes (it escapes
# them in strings), so no status or message can hold one.
AT_MARK = b"\x01"

_RECORD = """
-- KEYS[1] the monitor's beats ZSET; ARGV[1] the record with \\1 where at_ms goes
local now = redis.call('TIME')
local at = string.format('%d', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
local mark = string.find(ARGV[1], '\\1', 1, true)
redis.call('ZADD', KEYS[1], at,
           string.sub(ARGV[1], 1, mark - 1) .. at .. string.sub(ARGV[1], mark + 1))
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


class Recorder:
    """Records heartbeats at Redis server time, in one script call per heartbeat."""

    def __init__(self, r: aioredis.Redis, keys: Keys) -> None:
        self.keys = keys
        self._script = r.register_script(_RECORD)

    async def record(self, monitor_id: str, status: HeartbeatStatus,
                     message: str | None) -> int:
        """Record one heartbeat; returns its time (epoch ms, Redis's clock)."""
        at = await self._script(keys=[self.keys.beats(monitor_id)],
                                args=[Heartbeat.template(status, message)])
        return int(at)


async def seen(r: aioredis.Redis, keys: Keys, monitor_id: str, scheduled_ms: int,
               interval_ms: int) -> Seen:
    """The heartbeats a check scheduled at `scheduled_ms` judges (strictly before it: one in
    the same millisecond may be recorded after the check ran)."""
    key = keys.beats(monitor_id)
    # One MULTI: both reads see the same set.
    async with r.pipeline(transaction=True) as pipe:
        pipe.zrevrangebyscore(key, f"({scheduled_ms}", "-inf", start=0, num=1)
        pipe.zrangebyscore(key, scheduled_ms - interval_ms, f"({scheduled_ms}")
        latest, interval = await pipe.execute()
    return Seen(latest=Heartbeat.from_json(latest[0]) if latest else None,
                interval=[Heartbeat.from_json(raw) for raw in interval])
