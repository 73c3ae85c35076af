"""Postgres away under a running notifier (a forwarder in front of the session's Postgres,
cut and restored): it waits it out (engine.service.Outage: one warning, one line when back),
dead-letters nothing, and sends what came meanwhile once Postgres is back, without a restart
and without sending anything twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pytest

from engine.connections import postgres_pool
from engine.settings import Settings
from notifier.service import Notifier
from tests.integration.test_notifier import FAST, add_channel, monitor, started
from tests.support.events import opened, publish
from tests.support.helpers import free_port, running, store_monitors, wait_for
from tests.support.receivers import WebhookReceiver, webhook_receiver

pytestmark = pytest.mark.timeout(90)


class Forwarder:
    """127.0.0.1:`port` forwarded to the unix socket `target`; `cut` closes every connection
    and stops listening (the server is gone: connections refused), `restore` listens
    again."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def restore(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self.writers.discard(writer)


def unix_socket(dsn: str) -> str:
    """The socket of the session's Postgres: in the directory its DSN's `host=` names."""
    (path,) = [p for p in Path(parse_qs(urlsplit(dsn).query)["host"][0]).glob(".s.PGSQL.*")
               if p.suffix != ".lock"]
    return str(path)


@contextlib.asynccontextmanager
async def forwarded(dsn: str) -> AsyncIterator[tuple[Forwarder, str]]:
    """A forwarder to the session's Postgres and the DSN that goes through it."""
    parts = urlsplit(dsn)
    forwarder = Forwarder(unix_socket(dsn))
    await forwarder.restore()
    try:
        yield forwarder, urlunsplit(parts._replace(netloc=f"postgres@127.0.0.1:{forwarder.port}",
                                                   query=""))
    finally:
        with contextlib.suppress(AssertionError):
            await forwarder.cut()


async def test_postgres_away_then_back(r, pool, postgres_dsn, keys, clean):
    await pool.execute("TRUNCATE channels CASCADE")
    receiver = WebhookReceiver()
    async with webhook_receiver(receiver) as url, forwarded(postgres_dsn) as (forwarder, dsn):
        await store_monitors(pool, [monitor("web", tags=["prod"]), monitor("db", tags=["prod"])],
                             "api")
        await add_channel(pool, id="team", kind="webhook", url=url, secret=receiver.secret,
                          tags=["prod"])
        through = await postgres_pool(dsn)
        notifier = Notifier(r, through, keys, Settings(postgres_dsn=dsn, instance_id="n-out"),
                            FAST)
        try:
            async with running(notifier):
                await started(r, keys)
                await publish(r, keys, [opened("web", 1_000)])

                async def first() -> bool:
                    return len(receiver.delivered) == 1

                await wait_for(first)
                await forwarder.cut()
                await publish(r, keys, [opened("db", 2_000)])

                async def noticed() -> bool:  # the intake read the event and lost Postgres
                    return notifier.intakes[0].outage.since is not None

                await wait_for(noticed, timeout=30)
                await forwarder.restore()

                async def second() -> bool:
                    return len(receiver.delivered) == 2

                await wait_for(second, timeout=30)
        finally:
            await through.close()
    assert notifier.intakes[0].outage.since is None  # it said so when Postgres came back
    assert await r.xlen(keys.deadletter) == 0  # an outage is not a bad event
    assert sorted(d["event"]["monitor_id"] for d in receiver.delivered.values()) == ["db", "web"]
    assert len(receiver.requests) == 2
