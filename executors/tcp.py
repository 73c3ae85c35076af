"""TCP connect checks."""

from __future__ import annotations

import asyncio
import contextlib
import time

from pydantic import BaseModel, ConfigDict, Field

from engine.events import CheckDue, Observation
from executors.base import Context, down

KIND = "tcp"


class TcpSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)


async def check(spec: TcpSpec, ctx: Context, due: CheckDue) -> Observation:
    start = time.perf_counter()
    try:
        _, writer = await asyncio.open_connection(spec.host, spec.port)
    except OSError as exc:
        return down("connect", exc.strerror or str(exc))
    latency = (time.perf_counter() - start) * 1000
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Observation(outcome="up", latency_ms=latency, phases={"connect": latency})
