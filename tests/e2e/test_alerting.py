"""From checks to notifications with real processes: `vigil scheduler`, `vigil executor`,
`vigil evaluator` and `vigil notifier`, a webhook channel (signatures verified at the
receiver) and an apprise mailto:// channel (a real SMTP server). A target failing every
other check, with `confirm_down: 2`, opens no incident and notifies nobody; a steady
outage is exactly one incident, and one down and one resolved notification per channel."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

from engine import channels
from engine.channels import ChannelSpec
from engine.events import Event
from engine.secrets import KEY_VARIABLE, Keyring
from engine.streams import EVENT_FIELD
from executors.kinds import SCHEMA
from tests.support.helpers import reaped, store_monitors, vigil_env, wait_for
from tests.support.receivers import WebhookReceiver, smtp_server, webhook_receiver
from tests.support.servers import serve_app

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


class Target:
    """/flappy fails every other request; /site is up until `down` is set."""

    def __init__(self) -> None:
        self.flaps = 0
        self.down = False
        self.app = web.Application()
        self.app.router.add_get("/flappy", self.flappy)
        self.app.router.add_get("/site", self.site)

    async def flappy(self, _: web.Request) -> web.Response:
        self.flaps += 1
        return web.Response(status=500 if self.flaps % 2 else 200)

    async def site(self, _: web.Request) -> web.Response:
        return web.Response(status=503 if self.down else 200)


def role(name: str, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "vigil.cli", name],
                                env=vigil_env(**env), stdout=out, stderr=out)


async def test_flapping_notifies_nobody_and_an_outage_is_one_down_and_one_resolved(
        r, keys, pool, clean, redis_url, postgres_dsn, tmp_path):
    await pool.execute("TRUNCATE channels CASCADE")
    target, hook = Target(), WebhookReceiver()
    with smtp_server() as (smtp_port, mails):
        async with serve_app(target.app) as base, webhook_receiver(hook) as hook_url:
            alerting = {"confirm_down": 2, "confirm_up": 2}
            await store_monitors(pool, SCHEMA.parse([
                {"id": "flappy", "kind": "http", "interval": "1s", "timeout": "500ms",
                 "tags": ["prod"], "http": {"url": f"{base}/flappy"}, "alerting": alerting},
                {"id": "site", "kind": "http", "interval": "1s", "timeout": "500ms",
                 "tags": ["prod"], "http": {"url": f"{base}/site"}, "alerting": alerting}]),
                source="file")
            keyring = Keyring.from_env()
            await channels.save(pool, ChannelSpec(id="hook", kind="webhook", url=hook_url,
                                                  secret=hook.secret, tags=["prod"]), keyring)
            await channels.save(pool, ChannelSpec(
                id="mail", kind="apprise", tags=["prod"],
                url=f"mailto://127.0.0.1:{smtp_port}?mode=insecure&from=vigil@example.com"
                    "&to=ops@example.com"),
                keyring)
            env = {"VIGIL_REDIS_URL": redis_url, "VIGIL_POSTGRES_DSN": postgres_dsn,
                   KEY_VARIABLE: os.environ[KEY_VARIABLE], "VIGIL_NOTIFY_POLL_MS": "50",
                   "VIGIL_NOTIFY_BACKOFF_MS": "50"}
            with contextlib.ExitStack() as stack:
                procs = [stack.enter_context(reaped(role(name, tmp_path / f"{name}.log", env)))
                         for name in ("scheduler", "executor", "evaluator", "notifier")]

                async def events() -> list[Event]:
                    if not await r.exists(keys.events):
                        return []
                    return [Event.from_json(f[EVENT_FIELD])
                            for _, f in await r.xrange(keys.events)]

                async def site(event_type: str, status: str | None = None) -> bool:
                    return any(e.monitor_id == "site" and e.type == event_type
                               and status in (None, e.status) for e in await events())

                await wait_for(lambda: site("monitor.changed", "up"), timeout=60)
                target.down = True
                await wait_for(lambda: site("incident.opened"), timeout=60)

                async def told(message: str) -> bool:
                    return message in hook.messages() and len(mails) >= (
                        1 if message == "down" else 2)
                await wait_for(lambda: told("down"), timeout=60)
                target.down = False
                await wait_for(lambda: site("incident.resolved"), timeout=60)
                await wait_for(lambda: told("up"), timeout=60)

                async def flapped() -> bool:  # and the flapping target failed ten times
                    return target.flaps >= 20
                await wait_for(flapped, timeout=60)
                for proc in procs:
                    proc.terminate()
                await asyncio.gather(*(asyncio.to_thread(p.wait, 60) for p in procs))
            history = await events()
    assert [e for e in history if e.monitor_id == "flappy" and e.type != "status.changed"
            and e.status not in (None, "up")] == []
    assert [e.type for e in history if e.type.startswith("incident.")] == [
        "incident.opened", "incident.resolved"]
    assert {d["event"]["monitor_id"] for d in hook.delivered.values()} == {"site"}
    assert hook.messages() == Counter({"down": 1, "up": 1})
    assert hook.bad_signatures == 0
    assert len(mails) == 2
    subjects = [m["Subject"] for m in mails]
    assert all("site" in s for s in subjects), subjects
