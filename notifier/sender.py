"""The notifier's sender, in every notifier process: claims due deliveries from the outbox
(engine.channels.claim), sends them, records each attempt, and either marks the delivery
sent, schedules the next attempt (exponential backoff, full jitter) or, after the last one,
leaves it dead. It also turns due reminders of open incidents into deliveries."""

from __future__ import annotations

import asyncio
import contextlib
import random

import asyncpg
import orjson
import structlog

from engine import channels, metrics
from engine.channels import GONE, Claimed, NewDelivery, Outcome, delivery_key
from engine.guard import Guard
from engine.secrets import Keyring, SecretError
from engine.service import Outage
from notifier.messages import reminder
from notifier.settings import LEASE_GRACE_MS, NotifySettings
from notifier.transports import TransportError, Transports

# Attempts recorded in one transaction at most.
RECORD_BATCH = 500
log = structlog.get_logger(component="notifier")


def backoff_ms(attempt: int, base_ms: int, cap_ms: int, rng: random.Random) -> int:
    """Full jitter (AWS's "Exponential Backoff and Jitter"): uniform in [0, min(cap, base *
    2^(attempt-1))], so receivers that failed together are not retried together."""
    return int(rng.uniform(0, min(cap_ms, base_ms * 2 ** min(attempt - 1, 40))))


class Sender:
    def __init__(self, pool: asyncpg.Pool, name: str, settings: NotifySettings,
                 keyring: Keyring, guard: Guard) -> None:
        self.pool = pool
        self.name = name
        self.settings = settings
        self.keyring = keyring
        self.transports = Transports(settings.timeout_ms, guard)
        self.rng = random.Random()
        self._done: asyncio.Queue[tuple[Claimed, Outcome]] = asyncio.Queue()
        self.sent = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Until stopped; the sends in flight then finish (bounded by the timeout) and are
        recorded, so a SIGTERM loses no attempt."""
        s = self.settings
        lease_ms = s.timeout_ms + LEASE_GRACE_MS
        inflight: set[asyncio.Task[None]] = set()
        recorder = asyncio.create_task(self._recorder())
        loop = asyncio.get_running_loop()
        upkeep_at = 0.0
        try:
            while not stop.is_set():
                if len(inflight) >= s.concurrency:
                    # Full: the next claim waits for a free slot, not for the poll.
                    await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                if loop.time() >= upkeep_at:
                    await self.upkeep()
                    upkeep_at = loop.time() + s.poll_ms / 1000
                claimed = await channels.claim(self.pool, self.name,
                                               min(s.concurrency - len(inflight), s.batch),
                                               lease_ms, s.storm)
                if claimed:
                    for task in await self._start(claimed):
                        inflight.add(task)
                        task.add_done_callback(inflight.discard)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=s.poll_ms / 1000)
        finally:
            if inflight:
                await asyncio.gather(*inflight, return_exceptions=True)
            # Recorded even while stopping: the sends happened, the outbox must say so; past
            # a lease, recording is moot (another notifier may send it again, under its key).
            recorded = asyncio.create_task(self._done.join())
            await asyncio.wait([recorded], timeout=lease_ms / 1000)
            recorded.cancel()
            recorder.cancel()
            await self.transports.close()

    async def _start(self, claimed: list[Claimed]) -> list[asyncio.Task[None]]:
        rows = await channels.channels_of(self.pool, sorted({c.channel_id for c in claimed}))
        return [asyncio.create_task(self._deliver(c, rows.get(c.channel_id))) for c in claimed]

    async def _deliver(self, claimed: Claimed, row: asyncpg.Record | None) -> None:
        if row is None:  # deleted since: its deliveries went with it (ON DELETE CASCADE)
            return
        try:
            status = await self.transports.send(channels.opened(row, self.keyring),
                                                claimed.key, claimed.payload)
            outcome = Outcome(http_status=status)
        except SecretError as exc:
            outcome = self._failed(claimed, TransportError(str(exc), permanent=True))
        except TransportError as exc:
            outcome = self._failed(claimed, exc)
        except Exception as exc:  # a bug in a transport must not stop the others
            log.exception("send failed", key=claimed.key)
            outcome = self._failed(claimed, TransportError(repr(exc)))
        sent = metrics.DELIVERIES if outcome.error is None else metrics.DELIVERY_FAILURES
        sent.labels(claimed.channel_id, row["kind"]).inc()
        self._done.put_nowait((claimed, outcome))

    def _failed(self, claimed: Claimed, exc: TransportError) -> Outcome:
        last = exc.permanent or claimed.attempt >= claimed.max_attempts
        retry = None if last else backoff_ms(claimed.attempt, self.settings.backoff_ms,
                                             self.settings.backoff_max_ms, self.rng)
        log.warning("delivery failed" if retry is not None else "delivery dead",
                    key=claimed.key, channel_id=claimed.channel_id, attempt=claimed.attempt,
                    error=str(exc), http_status=exc.status, retry_in_ms=retry)
        return Outcome(error=str(exc), http_status=exc.status, retry_in_ms=retry)

    async def _recorder(self) -> None:
        """Finished attempts, recorded in batches (one transaction for all that finished
        meanwhile); through an outage, retried until it works. One whose lease passed first
        is sent again under its key, and the receiver dedupes."""
        outage = Outage("recording deliveries")
        while True:
            batch = [await self._done.get()]
            while not self._done.empty() and len(batch) < RECORD_BATCH:
                batch.append(self._done.get_nowait())
            while True:
                try:
                    moved = await channels.record(self.pool, self.name, batch)
                    outage.ok()
                    break
                except GONE as exc:
                    outage.failed(exc)
                    await asyncio.sleep(1.0)
            for claimed, outcome in batch:
                if claimed.key not in moved:
                    log.warning("lease lost before the attempt was recorded; the new holder's "
                                "counts", key=claimed.key)
                elif outcome.error is None:
                    self.sent += 1
                self._done.task_done()

    async def upkeep(self) -> None:
        """What is due besides deliveries, once per poll: expired leases, storms ready to
        fold, reminders."""
        if expired := await channels.expire_leases(self.pool):
            log.warning("deliveries whose notifier stopped mid-send are due again",
                        count=expired)
        await channels.fold_storms(self.pool, self.settings.storm)
        await self.reminders()

    async def reminders(self) -> None:
        """Every due reminder of an open incident becomes a delivery keyed by the incident,
        the channel and the reminder's number, in the transaction that counts it."""
        async with self.pool.acquire() as conn, conn.transaction():
            due = await channels.due_reminders(conn)
            await channels.add(conn, [
                NewDelivery(key=delivery_key(f"reminder:{r['subject']}:{r['reminders']}",
                                             r["channel_id"]),
                            channel_id=r["channel_id"], event_id=f"reminder:{r['subject']}",
                            message="reminder", monitor_id=r["monitor_id"],
                            payload=reminder(orjson.loads(r["opened"]), r["reminders"]))
                for r in due if r["enabled"]], self.settings.max_attempts)
