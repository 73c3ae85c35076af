"""SIGKILL of a real `vigil notifier` in the middle of a send (the receiver holds the request
open), then another notifier: every event gives exactly one delivered notification per
channel, counted at the receivers; a duplicate is only ever a retry of the same key (which
the receivers dedupe on webhook-id). The second notifier stops on SIGTERM with exit 0."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import channels
from engine.channels import ChannelSpec
from engine.keys import NOTIFIER_GROUP
from engine.secrets import KEY_VARIABLE, Keyring
from executors.kinds import SCHEMA
from tests.support.events import opened, publish, resolved
from tests.support.helpers import exit_code_on_sigterm, reaped, store_monitors, vigil_env, wait_for
from tests.support.receivers import WebhookReceiver, webhook_receiver

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
MONITORS = [f"web-{i}" for i in range(5)]


def start_notifier(redis_url: str, postgres_dsn: str, name: str,
                   log: Path) -> subprocess.Popen[bytes]:
    env = vigil_env(VIGIL_REDIS_URL=redis_url, VIGIL_POSTGRES_DSN=postgres_dsn,
                    VIGIL_INSTANCE_ID=name, **{KEY_VARIABLE: os.environ[KEY_VARIABLE]},
                    # A lease of 7 s (the timeout and its grace), fast retries, no storm.
                    VIGIL_NOTIFY_TIMEOUT_MS="2000", VIGIL_NOTIFY_BACKOFF_MS="50",
                    VIGIL_NOTIFY_STORM_COUNT="1000", VIGIL_NOTIFY_POLL_MS="50")
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "vigil.cli", "notifier"], env=env,
                                stdout=out, stderr=out)


async def test_sigkill_mid_send_loses_nothing_and_sends_each_once(
        tmp_path, r, keys, pool, postgres_dsn, redis_url, clean):
    await pool.execute("TRUNCATE channels CASCADE")
    hanging, steady = WebhookReceiver(hold_first=1), WebhookReceiver()
    log = tmp_path / "notifier.log"
    async with webhook_receiver(hanging) as hang_url, webhook_receiver(steady) as steady_url:
        await store_monitors(pool, [SCHEMA.validate({
            "id": m, "kind": "http", "tags": ["prod"], "http": {"url": "http://127.0.0.1:9/"}})
            for m in MONITORS], "api")
        for name, url in (("hanging", hang_url), ("steady", steady_url)):
            await channels.save(pool, ChannelSpec(id=name, kind="webhook", url=url,
                                                  secret=hanging.secret, tags=["prod"]),
                                Keyring.from_env())
        first = start_notifier(redis_url, postgres_dsn, "notifier-a", log)
        with reaped(first):
            async def grouped() -> bool:
                return await r.exists(keys.events) and any(
                    g["name"] == NOTIFIER_GROUP.encode()
                    for g in await r.xinfo_groups(keys.events))

            await wait_for(grouped, timeout=30)
            await publish(r, keys, [opened(m, 1_000) for m in MONITORS])
            await asyncio.wait_for(hanging.held.wait(), timeout=30)
            first.kill()
            await asyncio.to_thread(first.wait)
        # Events that come while no notifier runs wait in the stream.
        await publish(r, keys, [resolved(m, 1_000, 9_000) for m in MONITORS])
        second = start_notifier(redis_url, postgres_dsn, "notifier-b", log)
        with reaped(second):
            async def all_delivered() -> bool:
                return len(hanging.delivered) == len(steady.delivered) == 2 * len(MONITORS)

            await wait_for(all_delivered, timeout=60)
            code = await exit_code_on_sigterm(second)
        hanging.release.set()
    assert code == 0, log.read_text()[-3000:]
    for receiver in (hanging, steady):
        told = sorted((d["message"], d["event"]["monitor_id"])
                      for d in receiver.delivered.values())
        assert told == sorted((m, w) for m in ("down", "up") for w in MONITORS)
        # Retries reuse the delivered keys, nothing else.
        assert {k for k, _ in receiver.requests} == set(receiver.delivered)
    # The held one was sent again under its key after the killed notifier's lease ran out.
    assert len(hanging.requests) > len(hanging.delivered)
    rows = await channels.deliveries(pool, limit=100)
    assert {d["state"] for d in rows} == {"sent"}
    assert any(a["error"] == channels.LOST for d in rows for a in d["attempt_log"])
