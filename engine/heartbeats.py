"""Push heartbeats: the API records the last one per monitor in the Redis HASH
`keys.heartbeats`, and each push check judges it (executors.kinds.push).

A heartbeat's time is Redis server time, taken by the script that records it: an API host
with a wrong clock can neither keep a silent job alive nor make a punctual one look late."""

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
-- KEYS[1] heartbeats HASH; ARGV[1] monitor id, ARGV[2] the record with \\1 where at_ms goes
local now = redis.call('TIME')
local at = string.format('%d', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
local mark = string.find(ARGV[2], '\\1', 1, true)
redis.call('HSET', KEYS[1], ARGV[1],
           string.sub(ARGV[2], 1, mark - 1) .. at .. string.sub(ARGV[2], mark + 1))
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


class Recorder:
    """Records heartbeats at Redis server time, in one script call per heartbeat."""

    def __init__(self, r: aioredis.Redis, keys: Keys) -> None:
        self.keys = keys
        self._script = r.register_script(_RECORD)

    async def record(self, monitor_id: str, status: HeartbeatStatus,
                     message: str | None) -> int:
        """Record one heartbeat; returns its time (epoch ms, Redis's clock)."""
        at = await self._script(keys=[self.keys.heartbeats],
                                args=[monitor_id, Heartbeat.template(status, message)])
        return int(at)
