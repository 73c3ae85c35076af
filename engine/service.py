"""The service runner: roles run as asyncio tasks until SIGTERM/SIGINT, then stop gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
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


class Outage:
    """One warning when a server goes away and one line when it is back, however many
    retries come between: `failed` at each failure, `ok` at each success."""

    def __init__(self, what: str, **context: object) -> None:
        self.what = what
        self.context = context
        self.since: float | None = None

    def failed(self, exc: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.warning(f"{self.what} failed; retrying until it works", **self.context,
                        error=str(exc) or repr(exc))

    def ok(self) -> None:
        if self.since is not None:
            log.info(f"{self.what} works again", **self.context,
                     after_s=round(time.monotonic() - self.since, 1))
            self.since = None


class Steady:
    """How long this process has reached a server without a break (successes more than `gap_s`
    apart are a break). Whoever judges peers by their heartbeats in that server, or takes work
    they have left idle there, first watches it as long as the window it judges by: an outage
    stops every heartbeat alike, and the first process back must not take the others for dead
    before they could beat again."""

    def __init__(self, gap_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.gap_s = gap_s
        self.clock = clock
        self._since: float | None = None
        self._last: float | None = None

    def ok(self) -> None:
        now = self.clock()
        if self._last is None or now - self._last > self.gap_s:
            self._since = now
        self._last = now

    def for_ms(self) -> float:
        now = self.clock()
        if self._since is None or self._last is None or now - self._last > self.gap_s:
            return 0.0
        return (now - self._since) * 1000


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
