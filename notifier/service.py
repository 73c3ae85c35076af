"""`vigil notifier`: the intake (events to deliveries, one notifier at a time) and the sender
(deliveries to channels, shared by every notifier) side by side, until SIGTERM."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
import redis.asyncio as aioredis
import structlog

from engine.channels import GONE
from engine.connections import cluster_nodes
from engine.guard import REFRESH_S, Guard
from engine.keys import Keys
from engine.secrets import Keyring
from engine.service import Outage, every
from engine.settings import Settings
from engine.shards import listed
from notifier.intake import Intake, pause
from notifier.sender import Sender
from notifier.settings import NotifySettings

# The events stream's trim and gauges (engine.streams.Upkeep), as every reader runs them.
UPKEEP_S = 10.0
log = structlog.get_logger(component="notifier")


class Notifier:
    name = "notifier"

    def __init__(self, r: aioredis.Redis, pool: asyncpg.Pool, keys: Keys | Sequence[Keys],
                 settings: Settings, notify: NotifySettings | None = None) -> None:
        """`keys`: the shards whose events this notifier takes in (an intake each); the
        sender delivers for all."""
        self.notify = notify or NotifySettings.from_env()
        self.intakes = [Intake(r, k, settings.postgres_dsn, settings.instance_id,
                               self.notify.max_attempts, settings.retention)
                        for k in listed(keys)]
        # Channel URLs are anyone's with a write token: sent only where checks may connect.
        self.guard = Guard(settings, nodes=lambda: cluster_nodes(r))
        self.sender = Sender(pool, settings.instance_id, self.notify, Keyring.from_env(),
                             self.guard)

    async def run(self, stop: asyncio.Event) -> None:
        await self.guard.start()
        log.info("notifier started", concurrency=self.notify.concurrency,
                 max_attempts=self.notify.max_attempts)
        await asyncio.gather(*(intake.run(stop) for intake in self.intakes), self._send(stop),
                             *(every(UPKEEP_S, stop, intake.upkeep, "events upkeep")
                               for intake in self.intakes),
                             every(REFRESH_S, stop, self.guard.refresh, "guard"))
        log.info("notifier stopped", sent=self.sender.sent)

    async def _send(self, stop: asyncio.Event) -> None:
        """The sender, through Postgres outages: one warning, retries, no restart."""
        outage = Outage("notifier sender")
        while not stop.is_set():
            try:
                await self.sender.run(stop)
                outage.ok()
            except GONE as exc:
                outage.failed(exc)
                await pause(stop, 1.0)
