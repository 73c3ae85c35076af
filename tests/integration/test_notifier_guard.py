"""The deny list for channel URLs (engine.guard, through notifier.transports): a webhook or an
apprise URL set by any holder of a write token does not reach Vigil's own Redis, cloud
metadata or a VIGIL_DENY_TARGETS entry, by address or by name; the attempt fails with an error
naming the rule, is retried and ends dead like any failed one, and the target never sees a
connection. VIGIL_ALLOW_TARGETS lets an operator's receiver through.

The notifiers here run with settings whose own servers are the test session's redis-server
and Postgres, as in a deployment on them."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

from engine import channels
from engine.channels import Channel
from engine.guard import Guard
from engine.keys import Keys
from engine.resolver import Address, Resolver
from engine.settings import Settings, Target
from notifier.commands import send_test
from notifier.service import Notifier
from notifier.transports import TransportError, Transports
from tests.integration.test_notifier import FAST, add_channel, monitor, started
from tests.support.events import opened, publish
from tests.support.helpers import running, store_monitors, wait_for
from tests.support.hostile import RawServer, answer
from tests.support.receivers import SECRET, WebhookReceiver, webhook_receiver

pytestmark = pytest.mark.timeout(60)
OWN_REDIS = "is Vigil's own Redis (VIGIL_REDIS_URL)"
METADATA = "is link-local (169.254.0.0/16), where cloud metadata services answer"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture
async def outbox(pool: asyncpg.Pool, clean: None) -> None:
    await pool.execute("TRUNCATE channels CASCADE")


def own(redis_url: str, postgres_dsn: str, deny: str | None = None,
        allow: str | None = None) -> Settings:
    return Settings(redis_url=redis_url, postgres_dsn=postgres_dsn, instance_id="notify-guard",
                    deny_targets=(Target.parse(deny),) if deny else (),
                    allow_targets=(Target.parse(allow),) if allow else ())


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


async def dead_errors(r: aioredis.Redis, pool: asyncpg.Pool, keys: Keys, settings: Settings,
                      urls: dict[str, tuple[str, str]]) -> dict[str, list[str]]:
    """Channels (id: kind, URL) named by one monitor, one incident opened, a notifier with
    `settings` run until every delivery is dead or sent: the error of each attempt per
    channel, [] for a delivery sent."""
    for channel_id, (kind, url) in urls.items():
        await add_channel(pool, id=channel_id, kind=kind, url=url,
                          **({"secret": SECRET} if kind == "webhook" else {}))
    await store_monitors(pool, [monitor("web", named=list(urls))], "api")
    async with running(Notifier(r, pool, keys, settings, FAST)):
        await started(r, keys)
        await publish(r, keys, [opened("web", 1_000)])

        async def settled() -> bool:
            rows = await channels.deliveries(pool)
            return len(rows) == len(urls) and all(d["state"] in ("dead", "sent") for d in rows)

        await wait_for(settled)
    return {d["channel_id"]: [a["error"] for a in d["attempt_log"] if a["error"]]
            for d in await channels.deliveries(pool)}


def named(errors: list[str], rule: str) -> bool:
    """Every attempt failed, each with an error that names `rule`."""
    return len(errors) == FAST.max_attempts and all(
        e.startswith("denied: ") and rule in e for e in errors)


async def test_webhooks_to_vigils_own_redis_cloud_metadata_and_deny_targets_are_refused(
        r, pool, keys, redis_url, postgres_dsn, outbox):
    redis_port = port_of(redis_url)
    async with RawServer(answer(OK)) as listed:
        settings = own(redis_url, postgres_dsn, deny=f"127.0.0.1:{listed.port}")
        errors = await dead_errors(r, pool, keys, settings, {
            "redis": ("webhook", f"http://127.0.0.1:{redis_port}/hook"),
            # By name, and the IPv4-mapped form: what they reach is what is checked.
            "redis-by-name": ("webhook", f"http://localhost:{redis_port}/hook"),
            "redis-mapped": ("webhook", f"http://[::ffff:127.0.0.1]:{redis_port}/hook"),
            "metadata": ("webhook", "http://169.254.169.254/latest/meta-data/"),
            "listed": ("webhook", f"http://localhost:{listed.port}/hook"),
        })
    assert named(errors["redis"], f"127.0.0.1:{redis_port} {OWN_REDIS}")
    assert named(errors["redis-by-name"], "localhost resolves to")
    assert named(errors["redis-by-name"], OWN_REDIS)
    assert named(errors["redis-mapped"], OWN_REDIS)
    assert named(errors["metadata"], f"169.254.169.254:80 {METADATA}")
    assert named(errors["listed"], f"is in VIGIL_DENY_TARGETS (127.0.0.1:{listed.port})")
    assert "allow it with VIGIL_ALLOW_TARGETS=127.0.0.1:" in errors["listed"][0]
    assert listed.seen == []


async def test_allow_targets_let_an_operators_receiver_through(r, pool, keys, redis_url,
                                                              postgres_dsn, outbox):
    receiver = WebhookReceiver()
    async with RawServer(answer(OK)) as other, webhook_receiver(receiver) as url:
        settings = own(redis_url, postgres_dsn, deny="127.0.0.0/8",
                       allow=f"127.0.0.1:{port_of(url)}")
        errors = await dead_errors(r, pool, keys, settings, {
            "operator": ("webhook", url),
            "other": ("webhook", f"http://127.0.0.1:{other.port}/hook"),
        })
    assert errors["operator"] == []
    assert receiver.messages() == {"down": 1}
    assert named(errors["other"], "is in VIGIL_DENY_TARGETS (127.0.0.0/8)")
    assert other.seen == []


async def test_apprise_urls_at_denied_addresses_are_refused(r, pool, keys, redis_url,
                                                           postgres_dsn, outbox):
    redis_port = port_of(redis_url)
    async with RawServer(answer(OK)) as listed:
        settings = own(redis_url, postgres_dsn, deny=f"127.0.0.1:{listed.port}")
        errors = await dead_errors(r, pool, keys, settings, {
            "redis": ("apprise", f"json://127.0.0.1:{redis_port}/"),
            "metadata": ("apprise", "json://169.254.169.254/latest/meta-data/"),
            "listed": ("apprise", f"form://localhost:{listed.port}/"),
            # 127.0.0.1 as one number, which getaddrinfo reads as that address.
            "listed-decimal": ("apprise", f"json://2130706433:{listed.port}/"),
            "redis-v6": ("apprise", f"jsons://[::1]:{redis_port}/"),
        })
    assert named(errors["redis"], f"127.0.0.1:{redis_port} {OWN_REDIS}")
    assert named(errors["metadata"], f"169.254.169.254:80 {METADATA}")
    assert named(errors["listed"], "localhost resolves to 127.0.0.1; "
                                   f"127.0.0.1:{listed.port} is in VIGIL_DENY_TARGETS")
    assert named(errors["listed-decimal"], "2130706433 resolves to 127.0.0.1; ")
    assert named(errors["redis-v6"], f"[::1]:{redis_port} {OWN_REDIS}")
    assert listed.seen == []


async def test_vigil_notify_test_is_refused_too(pool, redis_url, postgres_dsn, outbox):
    await add_channel(pool, id="redis", kind="webhook", secret=SECRET,
                      url=f"http://127.0.0.1:{port_of(redis_url)}/hook")
    with pytest.raises(TransportError, match=r"^denied: .*is Vigil's own Redis"):
        await send_test(pool, "redis", FAST.timeout_ms, own(redis_url, postgres_dsn))


class Hosts(Resolver):
    """Names from a table, each answer in turn (the last one repeated): names that no real DNS
    knows, so a webhook that reaches one went to an address the guard checked, and a name
    whose answer changes between two lookups is DNS rebinding."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        super().__init__()
        self.table = table

    async def resolve(self, host: str, port: int,
                      within_s: float | None = None) -> tuple[list[Address], bool]:
        answers = self.table[host]
        ip = answers.pop(0) if len(answers) > 1 else answers[0]
        return [(socket.AF_INET, ip)], True


def webhook(url: str) -> Channel:
    return Channel(id="hook", kind="webhook", name="", url=url, secret=SECRET)


async def test_a_webhook_connects_to_the_address_the_guard_checked(redis_url, postgres_dsn):
    receiver = WebhookReceiver()
    async with RawServer(answer(OK)) as listed, webhook_receiver(receiver) as url:
        guard = Guard(own(redis_url, postgres_dsn, deny=f"127.0.0.1:{listed.port}"))
        # The first answer (TEST-NET, allowed) passes the check before the request; the
        # connect asks again and meets the listed listener's address: denied there.
        hosts = Hosts({"hook.test": ["127.0.0.1"],
                       "rebind.test": ["192.0.2.1", "127.0.0.1"]})
        transports = Transports(FAST.timeout_ms, guard, hosts)
        try:
            status = await transports.send(webhook(url.replace("127.0.0.1", "hook.test")),
                                           "key-1", {"message": "test"})
            with pytest.raises(TransportError, match=r"^denied: rebind.test resolves to "
                                                     r"127\.0\.0\.1; .*VIGIL_DENY_TARGETS"):
                await transports.send(webhook(f"http://rebind.test:{listed.port}/hook"),
                                      "key-2", {"message": "test"})
        finally:
            await transports.close()
    assert status == 200
    assert list(receiver.delivered) == ["key-1"]
    assert listed.seen == []
