"""The notifier on real Redis and Postgres: events XADDed to the events stream as the evaluator
writes them become deliveries in the outbox and reach real receivers (a webhook receiver that
verifies signatures, an aiosmtpd server behind apprise's mailto://), with retries, dead
letters, the storm guard, reminders and resolves to the channels that got the open."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from engine import channels
from engine.channels import ChannelSpec
from engine.events import MONITORING_DEGRADED, MONITORING_RESTORED, Event, event_id
from engine.keys import NOTIFIER_GROUP, Keys
from engine.monitors import MonitorBase
from engine.secrets import Keyring
from engine.settings import Settings
from engine.streams import EVENT_FIELD
from executors.kinds import SCHEMA
from notifier.service import Notifier
from notifier.settings import NotifySettings
from tests.support.events import change, opened, publish, resolved
from tests.support.helpers import free_port, running, store_monitors, wait_for
from tests.support.receivers import WebhookReceiver, smtp_server, webhook_receiver

pytestmark = pytest.mark.timeout(60)
FAST = NotifySettings(max_attempts=3, backoff_ms=20, backoff_max_ms=200, timeout_ms=2_000,
                      poll_ms=20)


@pytest.fixture
async def outbox(pool: asyncpg.Pool, clean: None) -> None:
    await pool.execute("TRUNCATE channels CASCADE")


def monitor(monitor_id: str, tags: list[str] | None = None,
            named: list[str] | None = None) -> MonitorBase:
    return SCHEMA.validate({"id": monitor_id, "kind": "http", "tags": tags or [],
                            "http": {"url": "http://127.0.0.1:9/"},
                            "alerting": {"channels": named or []}})


async def add_channel(pool: asyncpg.Pool, **fields: Any) -> None:
    await channels.save(pool, ChannelSpec.model_validate(fields), Keyring.from_env())


def notifier(r: aioredis.Redis, pool: asyncpg.Pool, postgres_dsn: str, keys: Keys,
             name: str = "notifier-1", notify: NotifySettings = FAST) -> Notifier:
    return Notifier(r, pool, keys, Settings(postgres_dsn=postgres_dsn, instance_id=name), notify)


def monitoring(type_: str, at_ms: int, **fields: Any) -> Event:
    return Event(type=type_, id=event_id(type_, "web", None, at_ms), monitor_id="web",
                 at_ms=at_ms, **fields)


async def started(r: aioredis.Redis, keys: Keys) -> None:
    """The notifier's group exists: what is published from now on is its to send."""
    async def made() -> bool:
        return any(g["name"] == NOTIFIER_GROUP.encode()
                   for g in await r.xinfo_groups(keys.events)) if await r.exists(
            keys.events) else False

    await wait_for(made)


async def test_signed_down_and_resolve_to_the_channels_that_got_the_open(
        r, pool, postgres_dsn, keys, outbox):
    by_tag, by_name, elsewhere = WebhookReceiver(), WebhookReceiver(), WebhookReceiver()
    async with (webhook_receiver(by_tag) as tag_url, webhook_receiver(by_name) as name_url,
                webhook_receiver(elsewhere) as other_url):
        await store_monitors(pool, [monitor("web", tags=["prod"], named=["pager"])], "api")
        await add_channel(pool, id="team", kind="webhook", url=tag_url, secret=by_tag.secret,
                          tags=["prod"])
        await add_channel(pool, id="pager", kind="webhook", url=name_url,
                          secret=by_name.secret)
        await add_channel(pool, id="other", kind="webhook", url=other_url,
                          secret=elsewhere.secret, tags=["staging"])
        async with running(notifier(r, pool, postgres_dsn, keys)):
            await started(r, keys)
            await publish(r, keys, [opened("web", 1_000)])

            async def got_open() -> bool:
                return bool(by_tag.delivered) and bool(by_name.delivered)

            await wait_for(got_open)
            # The routing changes while the incident is open, and it ends inside a maintenance
            # window: the resolve still goes to the channels that got the open.
            await store_monitors(pool, [monitor("web")], "api")
            await publish(r, keys, [resolved("web", 1_000, 5_000, maintenance=True)])

            async def got_resolve() -> bool:
                return by_tag.messages()["up"] == 1 and by_name.messages()["up"] == 1

            await wait_for(got_resolve)
    for receiver in (by_tag, by_name):
        assert receiver.messages() == {"down": 1, "up": 1}
        assert receiver.bad_signatures == 0
        down = next(d for d in receiver.delivered.values() if d["message"] == "down")
        assert down["type"] == "vigil.down"
        assert down["event"]["incident_id"] == "web:1000"
    assert elsewhere.requests == []


async def test_a_receiver_failing_twice_gets_it_once_with_one_key(
        r, pool, postgres_dsn, keys, outbox):
    receiver = WebhookReceiver(fail_first=2)
    async with webhook_receiver(receiver) as url:
        await store_monitors(pool, [monitor("web", tags=["prod"])], "api")
        await add_channel(pool, id="team", kind="webhook", url=url, secret=receiver.secret,
                          tags=["prod"])
        async with running(notifier(r, pool, postgres_dsn, keys)):
            await started(r, keys)
            await publish(r, keys, [opened("web", 1_000)])

            async def sent() -> bool:
                rows = await channels.deliveries(pool, state="sent")
                return len(rows) == 1

            await wait_for(sent)
    (row,) = await channels.deliveries(pool)
    assert len(receiver.delivered) == 1
    assert {msg_id for msg_id, _ in receiver.requests} == {row["key"]}
    assert receiver.attempts(row["key"]) == 3
    assert row["attempts"] == 3
    assert [a["http_status"] for a in row["attempt_log"]] == [500, 500, 200]
    assert row["attempt_log"][0]["error"] == "the receiver answered HTTP 500"


async def test_dead_after_the_last_attempt(r, pool, postgres_dsn, keys, outbox):
    receiver = WebhookReceiver(fail_first=100, fail_status=503)
    async with webhook_receiver(receiver) as url:
        await store_monitors(pool, [monitor("web", tags=["prod"])], "api")
        await add_channel(pool, id="team", kind="webhook", url=url, secret=receiver.secret,
                          tags=["prod"])
        async with running(notifier(r, pool, postgres_dsn, keys)):
            await started(r, keys)
            await publish(r, keys, [opened("web", 1_000)])

            async def dead() -> bool:
                return len(await channels.deliveries(pool, state="dead")) == 1

            await wait_for(dead)
    (row,) = await channels.deliveries(pool, state="dead")
    assert row["attempts"] == FAST.max_attempts == len(row["attempt_log"])
    assert row["last_status"] == 503
    assert receiver.delivered == {}


async def test_apprise_mailto_reaches_an_smtp_server(r, pool, postgres_dsn, keys, outbox):
    with smtp_server() as (port, mailbox):
        await store_monitors(pool, [monitor("web", named=["mail"])], "api")
        await add_channel(pool, id="mail", kind="apprise",
                          url=f"mailto://127.0.0.1:{port}?mode=insecure"
                              "&from=vigil@example.com&to=ops@example.com")
        async with running(notifier(r, pool, postgres_dsn, keys)):
            await started(r, keys)
            await publish(r, keys, [opened("web", 1_000)])

            async def received() -> bool:
                return len(mailbox) == 1

            await wait_for(received)
    (mail,) = mailbox
    assert "web DOWN" in mail["Subject"]
    assert mail["To"] == "ops@example.com"
    assert (await channels.deliveries(pool))[0]["state"] == "sent"


async def test_a_storm_is_one_summary(r, pool, postgres_dsn, keys, outbox):
    """30 incidents at once: past the guard's count, what is pending goes out as one summary
    (the first may go alone, before the storm shows)."""
    receiver = WebhookReceiver()
    async with webhook_receiver(receiver) as url:
        await store_monitors(pool, [monitor(f"web-{i}", tags=["prod"]) for i in range(30)],
                             "api")
        await add_channel(pool, id="team", kind="webhook", url=url, secret=receiver.secret,
                          tags=["prod"])
        async with running(notifier(r, pool, postgres_dsn, keys)):
            await started(r, keys)
            await publish(r, keys, [opened(f"web-{i}", 1_000) for i in range(30)])

            async def all_told() -> bool:
                rows = await channels.deliveries(pool, limit=100)
                return any(d["message"] == "summary" for d in rows) and all(
                    d["state"] in ("sent", "folded") for d in rows)

            await wait_for(all_told)
    alone = [d for d in receiver.delivered.values() if d["message"] == "down"]
    (summary,) = [d for d in receiver.delivered.values() if d["message"] == "summary"]
    assert len(alone) <= FAST.storm_count
    assert summary["count"] == 30 - len(alone)
    told = {d["event"]["monitor_id"] for d in alone} | {i["monitor_id"] for i in summary["items"]}
    assert told == {f"web-{i}" for i in range(30)}
    folded = await channels.deliveries(pool, state="folded")
    assert len(folded) == summary["count"]
    assert {f["folded_into"] for f in folded} == {k for k, d in receiver.delivered.items()
                                                  if d["message"] == "summary"}


async def test_what_is_not_notified(r, pool, postgres_dsn, keys, outbox):
    """An incident opened in maintenance or folded into a dependency's is not sent, and
    neither is its resolve; nor is monitoring degraded inside a muted window, nor its end;
    the stream's history from before the notifier is not sent."""
    receiver = WebhookReceiver()
    async with webhook_receiver(receiver) as url:
        await store_monitors(pool, [monitor("web", tags=["prod"]), monitor("db", tags=["prod"])],
                             "api")
        await add_channel(pool, id="team", kind="webhook", url=url, secret=receiver.secret,
                          tags=["prod"])
        # History: on the stream before the notifier's group is (publish would make it).
        await r.xadd(keys.events, {EVENT_FIELD: opened("db", 500).to_json()})
        async with running(notifier(r, pool, postgres_dsn, keys)):
            await started(r, keys)
            await publish(r, keys, [opened("web", 1_000, maintenance=True),
                                    resolved("web", 1_000, 2_000),
                                    opened("web", 3_000, folded_into="uplink:2900"),
                                    resolved("web", 3_000, 4_000),
                                    monitoring(MONITORING_DEGRADED, 4_500, maintenance=True),
                                    monitoring(MONITORING_RESTORED, 4_600),
                                    opened("web", 5_000)])

            async def last_sent() -> bool:
                return bool(receiver.delivered)

            await wait_for(last_sent)
            pending = await r.xpending(keys.events, NOTIFIER_GROUP)
    assert pending["pending"] == 0
    (only,) = receiver.delivered.values()
    assert only["event"]["incident_id"] == "web:5000"


async def test_degraded_flapping_and_monitoring_and_their_ends(
        r, pool, postgres_dsn, keys, outbox):
    receiver = WebhookReceiver()
    async with webhook_receiver(receiver) as url:
        await store_monitors(pool, [monitor("web", tags=["prod"])], "api")
        await add_channel(pool, id="team", kind="webhook", url=url, secret=receiver.secret,
                          tags=["prod"], events=["degraded", "flapping", "monitoring"])
        async with running(notifier(r, pool, postgres_dsn, keys)):
            await started(r, keys)
            changes = [("up", "degraded"), ("degraded", "flapping"), ("flapping", "up")]
            await publish(r, keys, [
                *[change("web", 1_000 * (i + 1), new, old) for i, (old, new) in
                  enumerate(changes)],
                monitoring(MONITORING_DEGRADED, 9_000, regions={"eu": "up", "us": "unknown"}),
                monitoring(MONITORING_RESTORED, 10_000)])
            expected = {"degraded": 1, "degraded.resolved": 1, "flapping": 1,
                        "flapping.resolved": 1, "monitoring.degraded": 1,
                        "monitoring.restored": 1}

            async def all_sent() -> bool:
                return receiver.messages() == expected

            await wait_for(all_sent)


async def test_reminders_while_open_then_none(r, pool, postgres_dsn, keys, outbox):
    receiver = WebhookReceiver()
    async with webhook_receiver(receiver) as url:
        await store_monitors(pool, [monitor("web", tags=["prod"])], "api")
        await add_channel(pool, id="team", kind="webhook", url=url, secret=receiver.secret,
                          tags=["prod"], resend_every="1s")
        async with running(notifier(r, pool, postgres_dsn, keys)):
            await started(r, keys)
            await publish(r, keys, [opened("web", 1_000)])

            async def reminded() -> bool:
                return receiver.messages()["reminder"] >= 2

            await wait_for(reminded)
            await publish(r, keys, [resolved("web", 1_000, 9_000)])

            async def got_resolve() -> bool:
                return receiver.messages()["up"] == 1

            await wait_for(got_resolve)
            assert await pool.fetchval("SELECT count(*) FROM open_alerts") == 0
    numbers = sorted(d["reminder"] for d in receiver.delivered.values()
                     if d["message"] == "reminder")
    assert numbers == list(range(1, len(numbers) + 1))


async def test_a_bad_event_is_dead_lettered_and_the_next_sent(
        r, pool, postgres_dsn, keys, outbox):
    receiver = WebhookReceiver()
    async with webhook_receiver(receiver) as url:
        await store_monitors(pool, [monitor("web", tags=["prod"])], "api")
        await add_channel(pool, id="team", kind="webhook", url=url, secret=receiver.secret,
                          tags=["prod"])
        async with running(notifier(r, pool, postgres_dsn, keys)):
            await started(r, keys)
            await publish(r, keys, [b'{"type": "incident.opened", "v": 7}', opened("web", 1_000)])

            async def sent() -> bool:
                return bool(receiver.delivered)

            await wait_for(sent)
    (dead,) = await r.xrange(keys.deadletter)
    assert b"version is 7" in dead[1][b"reason"]


async def test_two_notifiers_send_each_message_once(r, pool, postgres_dsn, keys, outbox):
    receiver = WebhookReceiver()
    async with webhook_receiver(receiver) as url:
        await store_monitors(pool, [monitor(f"web-{i}", tags=["prod"]) for i in range(8)],
                             "api")
        await add_channel(pool, id="team", kind="webhook", url=url, secret=receiver.secret,
                          tags=["prod"])
        async with (running(notifier(r, pool, postgres_dsn, keys, "n1")),
                    running(notifier(r, pool, postgres_dsn, keys, "n2"))):
            await started(r, keys)
            for i in range(8):
                await publish(r, keys, [opened(f"web-{i}", 1_000)])

            async def all_sent() -> bool:
                return len(await channels.deliveries(pool, state="sent")) == 8

            await wait_for(all_sent)
    assert len(receiver.requests) == len(receiver.delivered) == 8


async def test_an_apprise_failure_is_retried_recorded_and_keeps_the_url_secret(
        r, pool, postgres_dsn, keys, outbox):
    port = free_port()  # nothing listens there
    await store_monitors(pool, [monitor("web", named=["json"])], "api")
    await add_channel(pool, id="json", kind="apprise",
                      url=f"json://vigil:s3cret-token@127.0.0.1:{port}/hook")
    async with running(notifier(r, pool, postgres_dsn, keys)):
        await started(r, keys)
        await publish(r, keys, [opened("web", 1_000)])

        async def dead() -> bool:
            return len(await channels.deliveries(pool, state="dead")) == 1

        await wait_for(dead)
    (row,) = await channels.deliveries(pool)
    assert len(row["attempt_log"]) == FAST.max_attempts
    assert "Connection error" in row["last_error"]
    assert all("s3cret" not in (a["error"] or "") for a in row["attempt_log"])
