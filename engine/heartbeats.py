"""Push heartbeats: the API records the last one per monitor in the Redis HASH
`keys.heartbeats`, and each push check judges it (executors.kinds.push)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import orjson

MESSAGE_MAX = 500
HeartbeatStatus = Literal["up", "down"]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One stored heartbeat; api.push writes it, executors.kinds.push reads it."""

    at_ms: int
    status: HeartbeatStatus = "up"
    message: str | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Heartbeat:
        data = orjson.loads(raw)
        status = data.get("status")
        if not isinstance(data.get("at_ms"), int) or status not in ("up", "down"):
            raise ValueError(f"malformed heartbeat record {data!r}")
        message = data.get("message")
        return cls(at_ms=data["at_ms"], status=status,
                   message=message if isinstance(message, str) else None)
