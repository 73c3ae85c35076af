"""Push (heartbeat) monitors: the target calls Vigil, and the check asks whether it did.

A job calls `GET|POST /api/v1/push/{token}` (api.push), which keeps the last heartbeat in
the Redis HASH `keys.heartbeats`: monitor id -> {"at_ms", "status", "message"}. Each check
then judges the last heartbeat against its own scheduled time, so a redelivered check gives
the same answer:
- none since scheduled_ms - (interval + grace): `down`, `no_heartbeat`;
- the last one reported `down`: `down`, `reported_down`, with its message;
- otherwise `up`, with no latency (nothing was measured).
A monitor that never received a heartbeat is `down` ("never") from its first check: Vigil
does not know when the job was set up, and a silent job is exactly what this kind is for.
Give a new job its first run before enabling the monitor, or expect one `down` at first.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from engine.durations import parse_duration_ms
from engine.events import CheckDue, Observation
from engine.heartbeats import Heartbeat
from executors.base import Context, Kind, Spec, down

DEFAULT_GRACE_MS = 60_000
MAX_GRACE_MS = 30 * 86_400_000


class PushSpec(Spec):
    """`grace` (or `grace_ms`): how late a heartbeat may be beyond the interval."""


    grace_ms: int = Field(default=DEFAULT_GRACE_MS, ge=0, le=MAX_GRACE_MS)

    @model_validator(mode="before")
    @classmethod
    def _grace(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "grace" not in data:
            return data
        data = dict(data)
        if "grace_ms" in data:
            raise PydanticCustomError("duration", "give `grace` or `grace_ms`, not both")
        try:
            data["grace_ms"] = parse_duration_ms(data.pop("grace"))
        except ValueError as exc:
            raise PydanticCustomError("duration", f"grace: {exc}") from None
        return data


def ago(ms: int) -> str:
    """`45 s`, `12 min`, `3.5 h`, `2.0 d`: how long ago, readable in a status line."""
    seconds = max(ms, 0) / 1000
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


async def check(spec: PushSpec, ctx: Context, due: CheckDue) -> Observation:
    raw = await ctx.redis.hget(ctx.keys.heartbeats, due.monitor_id)
    window_ms = due.interval_ms + spec.grace_ms
    expected = f"expected one at least every {ago(window_ms)} (interval + grace)"
    if raw is None:
        return down("no_heartbeat", f"last heartbeat: never; {expected}")
    beat = Heartbeat.from_json(raw)
    # A heartbeat newer than the scheduled time (it came while the check waited) is fresh.
    age_ms = due.scheduled_ms - beat.at_ms
    if age_ms > window_ms:
        return down("no_heartbeat", f"last heartbeat {ago(age_ms)} ago; {expected}")
    if beat.status == "down":
        return down("reported_down", f"reported down {ago(age_ms)} ago: "
                                     f"{beat.message or '(no message)'}")
    return Observation(outcome="up")


KIND = Kind("push", PushSpec, check)
