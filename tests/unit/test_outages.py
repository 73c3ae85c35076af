"""A server away is an outage: upkeep says so once when it starts and once when it ends."""

from __future__ import annotations

import asyncio

from redis.exceptions import ConnectionError as RedisConnectionError
from structlog.testing import capture_logs

from engine.service import Outage, every


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


def test_a_retry_loop_says_an_outage_once_and_its_end_once():
    outage = Outage("reading checks", stream="vigil:{0}:checks:default")
    with capture_logs() as logs:
        for _ in range(50):
            outage.failed(RedisConnectionError("Error 111 connecting to redis:6379."))
        outage.ok()
        outage.ok()
    assert [(e["log_level"], e["event"]) for e in logs] == [
        ("warning", "reading checks failed; retrying until it works"),
        ("info", "reading checks works again")]
    assert logs[0]["stream"] == "vigil:{0}:checks:default"
