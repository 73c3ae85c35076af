"""The service runner: roles run as asyncio tasks until SIGTERM/SIGINT, then stop gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol

import asyncpg
import structlog
from clickhouse_connect.driver.exceptions import OperationalError as ClickHouseOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = structlog.get_logger(component="service")


class Service(Protocol):
    name: str

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, then finish or hand back in-flight work and return."""


# A server that is away (refusing, loading, shutting down, unreachable): an outage to wait
# out, not a bug to print a traceback for.
OUTAGES: tuple[type[Exception], ...] = (
    OSError, RedisConnectionError, RedisTimeoutError, asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError, asyncpg.ConnectionDoesNotExistError,
    ClickHouseOperationalError)


async def every(seconds: float, stop: asyncio.Event, job: Callable[[], Awaitable[object]],
                name: str) -> None:
    """Periodic upkeep (claims, reconciles, trims): an exception is logged, never fatal. An
    outage is one warning when it starts and one line when it ends, not one per period."""
    away = False
    while not stop.is_set():
        try:
            await job()
            if away:
                log.info("upkeep going again", job=name)
                away = False
        except OUTAGES as exc:
            if not away:
                log.warning("upkeep waits for a server", job=name, error=str(exc) or repr(exc))
                away = True
        except Exception:
            log.exception("upkeep failed", job=name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def run_all(services: list[Service], stop: asyncio.Event) -> None:
    """Run roles side by side; if one fails, stop the others, then re-raise its error."""
    tasks = {asyncio.create_task(s.run(stop), name=s.name): s for s in services}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = [t for t in done if not t.cancelled() and t.exception() is not None]
        if failed:
            stop.set()
            if not isinstance(failed[0].exception(), OUTAGES):  # said once by the CLI
                log.error("service failed", service=failed[0].get_name(),
                          error=repr(failed[0].exception()))
        await asyncio.gather(*tasks, return_exceptions=True)
        if failed:
            raise failed[0].exception()  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
