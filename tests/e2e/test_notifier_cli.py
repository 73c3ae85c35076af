"""`vigil notify test`, `vigil channels list|show` and `vigil deliveries` as an operator runs
them: a test message sent at once from the shell (no notifier running), a channel listed and
shown without its URL or secret, a dead delivery found by its state, and the errors that
name what is wrong."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import orjson
import pytest

from engine import channels
from engine.channels import ChannelSpec, Outcome, Storm
from engine.secrets import KEY_VARIABLE, REDACTED, Keyring
from tests.support.helpers import vigil_env
from tests.support.receivers import WebhookReceiver, webhook_receiver

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def vigil(postgres_dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = vigil_env(VIGIL_POSTGRES_DSN=postgres_dsn, **{KEY_VARIABLE: os.environ[KEY_VARIABLE]})
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "vigil.cli", *args],
                                   env=env, capture_output=True, text=True, timeout=60)


async def test_notify_test_channels_list_and_dead_deliveries(pool, postgres_dsn, clean):
    await pool.execute("TRUNCATE channels CASCADE")
    receiver = WebhookReceiver()
    async with webhook_receiver(receiver) as url:
        await channels.save(pool, ChannelSpec(id="hook", kind="webhook", url=url,
                                              secret=receiver.secret, tags=["prod"]),
                            Keyring.from_env())
        sent = await vigil(postgres_dsn, "notify", "test", "hook")
        assert sent.returncode == 0, sent.stderr
        assert "sent to hook (HTTP 200)" in sent.stdout
        assert [d["message"] for d in receiver.delivered.values()] == ["test"]
        missing = await vigil(postgres_dsn, "notify", "test", "nope")
        assert missing.returncode == 1
        assert "no channel 'nope'" in missing.stderr
    gone = await vigil(postgres_dsn, "notify", "test", "hook")  # the receiver is gone
    assert gone.returncode == 1
    assert "notify test hook:" in gone.stderr
    listed = await vigil(postgres_dsn, "channels", "list")
    assert listed.returncode == 0, listed.stderr
    assert "hook" in listed.stdout
    assert "webhook" in listed.stdout
    assert url not in listed.stdout
    shown = await vigil(postgres_dsn, "channels", "show", "hook")
    assert shown.returncode == 0, shown.stderr
    assert orjson.loads(shown.stdout)["url"] == orjson.loads(shown.stdout)["secret"] == REDACTED
    unknown = await vigil(postgres_dsn, "channels", "show", "nope")
    assert (unknown.returncode, unknown.stderr.strip()) == (1, "vigil: no channel 'nope'")
    # A delivery that failed its last attempt, as a notifier leaves it.
    key = await channels.add_test(pool, "hook")
    (claimed,) = await channels.claim(pool, "cli-test", 10, 60_000, Storm(100, 1_000, 1, 1))
    assert claimed.key == key
    await channels.record(pool, "cli-test", [(claimed, Outcome(error="the receiver answered "
                                                               "HTTP 500", http_status=500))])
    dead = await vigil(postgres_dsn, "deliveries", "--state", "dead")
    assert dead.returncode == 0, dead.stderr
    assert key in dead.stdout
    assert "last error: the receiver answered HTTP 500" in dead.stdout
    bad = await vigil(postgres_dsn, "deliveries", "--state", "lost")
    assert bad.returncode == 2
    assert "invalid choice" in bad.stderr
