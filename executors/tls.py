"""TLS certificate checks."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from engine.events import CheckDue, Observation
from executors.base import Context

KIND = "tls"


class TlsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


async def check(spec: TlsSpec, ctx: Context, due: CheckDue) -> Observation:
    raise NotImplementedError
