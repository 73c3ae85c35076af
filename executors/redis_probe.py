"""Redis probes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from engine.events import CheckDue, Observation
from executors.base import Context

KIND = "redis"


class RedisSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


async def check(spec: RedisSpec, ctx: Context, due: CheckDue) -> Observation:
    raise NotImplementedError
