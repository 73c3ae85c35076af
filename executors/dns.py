"""DNS checks."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from engine.events import CheckDue, Observation
from executors.base import Context

KIND = "dns"


class DnsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


async def check(spec: DnsSpec, ctx: Context, due: CheckDue) -> Observation:
    raise NotImplementedError
