"""The channels API on the real app, Postgres and Redis: CRUD with write-only secrets, errors
naming the field, a test message sent by a running notifier, and the deliveries it lists."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from api import tokens
from engine import channels
from engine.secrets import KEY_VARIABLE, REDACTED
from engine.settings import Settings
from notifier.service import Notifier
from tests.integration.test_notifier import FAST
from tests.support.helpers import running
from tests.support.receivers import WebhookReceiver, webhook_receiver
from tests.support.servers import api_client

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def outbox(pool, clean) -> None:
    await pool.execute("TRUNCATE channels CASCADE")


async def problems(resp) -> dict[str, str]:
    assert resp.status == 422, await resp.text()
    return {e["field"]: e["message"] for e in (await resp.json())["errors"]}


async def test_a_webhook_secret_is_made_shown_once_and_never_read_back(api: TestClient, pool,
                                                                        outbox):
    url = "https://hooks.example.com/T0KEN-in-the-path"
    resp = await api.post("/api/v1/channels", json={"id": "ops", "kind": "webhook", "url": url,
                                                    "tags": ["prod"], "resend_every": "1h"})
    assert resp.status == 201, await resp.text()
    made = await resp.json()
    assert made["secret"].startswith("whsec_")
    assert made["url"] == REDACTED
    assert made["resend_every_ms"] == 3_600_000
    for path in ("/api/v1/channels/ops", "/api/v1/channels"):
        text = await (await api.get(path)).text()
        assert url not in text
        assert made["secret"] not in text
    shown = await (await api.get("/api/v1/channels/ops")).json()
    assert shown["secret"] == REDACTED
    assert shown["service"] == "webhook"
    stored = await pool.fetchrow("SELECT url, secret FROM channels WHERE id = 'ops'")
    assert "T0KEN" not in stored["url"]
    assert made["secret"] not in stored["secret"]
    # A PUT sending REDACTED back keeps both; the stored texts do not change.
    resp = await api.put("/api/v1/channels/ops", json={**shown, "events": ["down"]})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["secret"] == REDACTED
    again = await pool.fetchrow("SELECT url, secret, events FROM channels WHERE id = 'ops'")
    assert (again["url"], again["secret"], list(again["events"])) == (
        stored["url"], stored["secret"], ["down"])
    assert (await api.post("/api/v1/channels", json={"id": "ops", "kind": "webhook",
                                                     "url": url})).status == 409
    assert (await api.delete("/api/v1/channels/ops")).status == 204
    assert (await api.get("/api/v1/channels/ops")).status == 404


async def test_bad_channels_name_the_field(api: TestClient, outbox):
    cases = [
        ({"id": "a", "kind": "apprise", "url": "nosuchservice://x"}, "url"),
        ({"id": "a", "kind": "pager", "url": "json://127.0.0.1/"}, "kind"),
        ({"id": "a", "kind": "webhook", "url": "ftp://127.0.0.1/"}, "url"),
        ({"id": "a", "kind": "apprise", "url": "json://127.0.0.1/", "secret": "x"}, "secret"),
        ({"id": "a", "kind": "webhook", "url": "http://127.0.0.1/", "secret": "whsec_!"},
         "secret"),
        ({"id": "a", "kind": "webhook", "url": "http://127.0.0.1/", "resend_every": "soon"},
         "resend_every"),
        ({"id": "a", "kind": "webhook", "url": "http://127.0.0.1/", "events": ["sometimes"]},
         "events.0"),
        ({"id": "a b", "kind": "webhook", "url": "http://127.0.0.1/"}, "id"),
        ({"id": "a", "kind": "webhook", "url": REDACTED}, "url"),
    ]
    for body, field in cases:
        found = await problems(await api.post("/api/v1/channels", json=body))
        assert field in found, (body, found)
    assert (await api.get("/api/v1/channels")).status == 200
    assert await (await api.get("/api/v1/channels")).json() == {"channels": []}


async def test_no_secret_key_is_a_422_naming_it(r, pool, ch, outbox, monkeypatch):
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    await pool.execute("TRUNCATE api_tokens")
    token = await tokens.create(pool, "writer", "write")
    async with api_client(r, pool, ch, token=token) as client:
        found = await problems(await client.post("/api/v1/channels", json={
            "id": "ops", "kind": "apprise", "url": "json://127.0.0.1:9/"}))
    assert KEY_VARIABLE in found["url"]


async def test_test_messages_and_the_deliveries_listed(api: TestClient, r, pool, postgres_dsn,
                                                       keys, outbox):
    good, bad = WebhookReceiver(), WebhookReceiver(fail_first=100)
    async with webhook_receiver(good) as good_url, webhook_receiver(bad) as bad_url:
        for name, url, receiver in (("good", good_url, good), ("bad", bad_url, bad)):
            resp = await api.put(f"/api/v1/channels/{name}", json={
                "kind": "webhook", "url": url, "secret": receiver.secret})
            assert resp.status == 201, await resp.text()
        notifier = Notifier(r, pool, keys, Settings(postgres_dsn=postgres_dsn,
                                                    instance_id="api-test"), FAST)
        async with running(notifier):
            sent = await api.post("/api/v1/channels/good/test")
            failed = await api.post("/api/v1/channels/bad/test")
        assert sent.status == failed.status == 200
    assert (await sent.json())["sent"] is True
    assert [d["message"] for d in good.delivered.values()] == ["test"]
    result = await failed.json()
    assert result["sent"] is False
    assert result["delivery"]["state"] == "dead"
    assert result["delivery"]["last_status"] == 500
    listed = await (await api.get("/api/v1/deliveries", params={"state": "dead"})).json()
    assert [d["channel_id"] for d in listed["deliveries"]] == ["bad"]
    assert listed["deliveries"][0]["attempt_log"][0]["http_status"] == 500
    by_channel = await (await api.get("/api/v1/deliveries",
                                      params={"channel": "good"})).json()
    assert [d["state"] for d in by_channel["deliveries"]] == ["sent"]
    assert "state" in await problems(await api.get("/api/v1/deliveries",
                                                   params={"state": "lost"}))
    assert "limit" in await problems(await api.get("/api/v1/deliveries",
                                                   params={"limit": "²"}))
    assert (await api.post("/api/v1/channels/nope/test")).status == 404


async def test_reading_needs_read_and_changing_write(r, pool, ch, outbox):
    await pool.execute("TRUNCATE api_tokens")
    reader = await tokens.create(pool, "reader", "read")
    async with api_client(r, pool, ch, token=reader) as client:
        assert (await client.get("/api/v1/channels")).status == 200
        assert (await client.get("/api/v1/deliveries")).status == 200
        resp = await client.post("/api/v1/channels", json={
            "id": "ops", "kind": "apprise", "url": "json://127.0.0.1:9/"})
        assert resp.status == 403
    async with api_client(r, pool, ch) as anonymous:
        assert (await anonymous.get("/api/v1/channels")).status == 401
    assert await channels.list_all(pool) == []
