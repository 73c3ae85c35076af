"""Push (heartbeat) monitors: the target calls Vigil, and the check asks whether it did.

A job calls `GET|POST /api/v1/push/{token}` (api.push), which records every heartbeat at
Redis server time (engine.heartbeats). A check scheduled at T judges only the heartbeats from
before T, so a redelivered check gives the same answer whatever arrived since; each heartbeat
falls in exactly one check's interval, [T - interval, T). In this order:
- no heartbeat within interval + grace before T: `down`, `no_heartbeat`;
- the last one before T reported `down`: `down`, `reported_down`, with its message (a failure
  stays down until the next success, as in Healthchecks.io);
- a `down` within the check's interval, then an `up`: still `down`, `reported_down`, with the
  last failure's message and when it recovered. A cron job that failed and then succeeded on
  a retry had a failed run, and its owner wants to hear of it: judged by the last heartbeat
  alone, that failure would be recorded nowhere. The next check, whose interval holds only
  the recovery, is `up`;
- otherwise `up`, with no latency (nothing was measured).
A monitor that never received a heartbeat is `down` from its first check: Vigil does not know
when the job was set up, and a silent job is exactly what this kind is for. Give a new job its
first run before enabling the monitor, or expect one `down` at first.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from engine.durations import parse_duration_ms
from engine.events import CheckDue, Observation
from engine.heartbeats import Seen, seen
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


def judge(beats: Seen, due: CheckDue, grace_ms: int) -> Observation:
    """The verdict on what one check saw (see the module docstring)."""
    window_ms = due.interval_ms + grace_ms
    expected = f"expected one at least every {ago(window_ms)} (interval + grace)"
    latest = beats.latest
    if latest is None:
        return down("no_heartbeat", f"no heartbeat on record; {expected}")
    age_ms = due.scheduled_ms - latest.at_ms
    if age_ms > window_ms:
        return down("no_heartbeat", f"last heartbeat {ago(age_ms)} ago; {expected}")
    if latest.status == "down":
        return down("reported_down", f"reported down {ago(age_ms)} ago: "
                                     f"{latest.message or '(no message)'}")
    failures = [i for i, beat in enumerate(beats.interval) if beat.status == "down"]
    if failures:
        # The last heartbeat is an up, so one follows the last failure in this interval.
        failed, recovered = beats.interval[failures[-1]], beats.interval[failures[-1] + 1]
        return down("reported_down",
                    f"reported down {ago(due.scheduled_ms - failed.at_ms)} ago, up again "
                    f"{ago(due.scheduled_ms - recovered.at_ms)} ago: "
                    f"{failed.message or '(no message)'}")
    return Observation(outcome="up")


async def check(spec: PushSpec, ctx: Context, due: CheckDue) -> Observation:
    beats = await seen(ctx.redis, ctx.keys, due.monitor_id, due.scheduled_ms, due.interval_ms,
                       spec.grace_ms)
    return judge(beats, due, spec.grace_ms)


KIND = Kind("push", PushSpec, check)
