"""A server away is an outage: upkeep says so once when it starts and once when it ends."""

from __future__ import annotations

import asyncio

from redis.exceptions import ConnectionError as RedisConnectionError
from structlog.testing import capture_logs

from engine.service import every


async def test_an_outage_is_one_warning_and_one_line_when_it_ends():
    stop = asyncio.Event()
    calls = 0

    async def job() -> None:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379.")
        if calls == 5:
            stop.set()

    with capture_logs() as logs:
        await every(0, stop, job, "claim")
    assert [(entry["log_level"], entry["event"]) for entry in logs] == [
        ("warning", "upkeep waits for a server"), ("info", "upkeep going again")]
    assert "127.0.0.1:6379" in logs[0]["error"]
