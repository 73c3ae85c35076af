"""ICMP ping checks."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from engine.events import CheckDue, Observation
from executors.base import Context

KIND = "icmp"


class IcmpSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


async def check(spec: IcmpSpec, ctx: Context, due: CheckDue) -> Observation:
    raise NotImplementedError
