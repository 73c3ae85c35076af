"""One shard as an executor serves it: the shard's checks stream and the consumer reading it,
the results stream its completions go to, its dead letters, its registry and upkeep.

An executor holds one lane per shard it serves and one concurrency budget over all of them
(executors.service): a Redis Cluster puts each shard's keys in one slot, and XREADGROUP, the
completion script and every other call touch one slot, so each shard is read and written on
its own, and a shard whose server is away holds back only its own lane.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine import registry
from engine.keys import EXECUTOR_GROUP, RESULT_GROUPS, Keys
from engine.service import Outage, Steady
from engine.settings import Settings
from engine.streams import Completed, Completions, Consumer, DeadLetters, Upkeep, ensure_group
from executors.admission import Shedding
from executors.base import Context

FLUSH_MAX = 500


class Lane:
    def __init__(self, r: aioredis.Redis, keys: Keys, settings: Settings, ctx: Context) -> None:
        self.r = r
        self.keys = keys
        self.stream = keys.checks(settings.region)
        self.consumer = Consumer(r, self.stream, EXECUTOR_GROUP, settings.instance_id)
        self.deadletters = DeadLetters(r, keys.deadletter)
        self.completions = Completions(r, self.stream, keys.results, keys.deadletter,
                                       EXECUTOR_GROUP)
        self.upkeep = Upkeep(r, self.stream, EXECUTOR_GROUP, (EXECUTOR_GROUP,),
                             settings.retention)
        # The executor's context with this shard's keys: a push check reads its shard's beats.
        self.ctx = ctx
        # Entries this lane holds: waiting, running, or their result not yet written. A claim
        # sweep or a backlog read may hand one out again; it is never started twice.
        self.held: set[bytes] = set()
        self.done: list[Completed] = []
        self.done_ready = asyncio.Event()
        self.reading = Outage("reading checks", stream=self.stream)
        self.writing = Outage("writing results", stream=self.stream)
        # Peers are judged alive by heartbeats within the claim time; this lane beats four
        # times in it and judges only once it has reached its server steadily that long.
        self.steady = Steady(2 * registry.beat_every_s(settings.claim_idle_ms))
        # Whether this shard's stream holds a backlog the executor is not working off.
        self.shedding = Shedding(settings.lag_target_ms)

    async def open(self) -> None:
        await ensure_group(self.r, self.stream, EXECUTOR_GROUP)
        # Result groups exist before the first result, so a trim by one sink can never drop
        # what a sink that has not started yet will need.
        for group in RESULT_GROUPS:
            await ensure_group(self.r, self.keys.results, group)

    def complete(self, completed: Completed) -> None:
        self.done.append(completed)
        self.done_ready.set()

    async def flush(self) -> bool:
        """Write results and acks in batches, one round trip for up to FLUSH_MAX checks; False
        when the server is away (the batch is put back: its entries stay pending)."""
        while self.done:
            batch, self.done = self.done[:FLUSH_MAX], self.done[FLUSH_MAX:]
            try:
                await self.completions.write(batch)
            except RedisError as exc:
                self.done[:0] = batch
                self.writing.failed(exc)
                return False
            self.held.difference_update(entry_id for entry_id, *_ in batch)
            self.writing.ok()
        return True
