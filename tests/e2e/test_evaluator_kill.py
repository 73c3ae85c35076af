"""A real `vigil evaluator` and a real `vigil notifier` SIGKILLed mid-run, again and again, and
restarted under their names, while a real scheduler and executor check targets that go down
and up every few seconds: every transition gives exactly one event, the same events a single
uninterrupted evaluation of the same results gives (evaluator.state over the results stream,
per monitor in scheduled order), and every event exactly the notifications it means, each
delivered once (counted at a signature-checking receiver that dedupes on webhook-id)."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from aiohttp import web

from engine import channels
from engine.channels import ChannelSpec
from engine.events import CheckResult, Event
from engine.keys import EVALUATOR_GROUP, NOTIFIER_GROUP
from engine.rules import Rules
from engine.secrets import KEY_VARIABLE, Keyring
from engine.streams import EVENT_FIELD, event_of
from evaluator.state import MonitorState, evaluate
from executors.kinds import SCHEMA
from notifier.messages import steps
from tests.support.helpers import reaped, store_monitors, vigil_env, wait_for
from tests.support.receivers import WebhookReceiver, webhook_receiver
from tests.support.servers import serve_app

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
MONITORS = 12
KILLS = 4


def flipping_target() -> web.Application:
    """/flip/N answers 200 or 500, changing every N seconds."""
    async def flip(request: web.Request) -> web.Response:
        period = int(request.match_info["period"])
        return web.Response(status=200 if int(time.time() / period) % 2 else 500)

    app = web.Application()
    app.router.add_get("/flip/{period}", flip)
    return app


def role(name: str, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "vigil.cli", name],
                                env=vigil_env(**env), stdout=out, stderr=out)


def notifications(events: list[Event]) -> list[tuple[str, str]]:
    """(message, event id) of what one channel routed everything gets from `events`, as the
    notifier means to send it (notifier.messages): every open, and each end whose open was
    sent."""
    sent: set[tuple[str, str, str]] = set()
    out = []
    for event in events:
        for step in steps(event):
            key = (event.monitor_id, step.alert, step.subject)
            if step.opens:
                sent.add(key)
            elif key in sent:
                sent.discard(key)
            else:
                continue
            out.append((step.message, event.id))
    return sorted(out)


async def drained(r, stream: str, group: str) -> bool:
    info = {g["name"].decode(): g for g in await r.xinfo_groups(stream)}
    last = (await r.xinfo_stream(stream))["last-generated-id"]
    return info[group]["pending"] == 0 and info[group]["last-delivered-id"] == last


async def test_every_transition_is_one_event_and_one_notification_across_kills(
        r, keys, pool, clean, redis_url, postgres_dsn, tmp_path):
    """The evaluator and the notifier are each SIGKILLed KILLS times, somewhere in their
    work, and restarted under their names."""
    await pool.execute("TRUNCATE channels CASCADE")
    env = {"VIGIL_REDIS_URL": redis_url, "VIGIL_POSTGRES_DSN": postgres_dsn}
    hook = WebhookReceiver()
    async with serve_app(flipping_target()) as base, webhook_receiver(hook) as hook_url:
        definitions = [{"id": f"flip{i}", "kind": "http", "interval": "1s", "timeout": "500ms",
                        "tags": ["flip"], "http": {"url": f"{base}/flip/{2 + i % 3}"},
                        "alerting": {"confirm_down": 2, "confirm_up": 1}}
                       for i in range(MONITORS)]
        monitors = SCHEMA.parse(definitions)
        await store_monitors(pool, monitors, source="file")
        await channels.save(pool, ChannelSpec(id="hook", kind="webhook", url=hook_url,
                                              secret=hook.secret, tags=["flip"]),
                            Keyring.from_env())
        scheduler = role("scheduler", tmp_path / "scheduler.log", env)
        executor = role("executor", tmp_path / "executor.log", env)
        evaluator_env = {**env, "VIGIL_INSTANCE_ID": "evaluator-1"}
        # Fast retries, and no storm guard: each message is its own delivery here.
        notifier_env = {**env, "VIGIL_INSTANCE_ID": "notifier-1",
                        KEY_VARIABLE: os.environ[KEY_VARIABLE], "VIGIL_NOTIFY_POLL_MS": "50",
                        "VIGIL_NOTIFY_BACKOFF_MS": "50", "VIGIL_NOTIFY_TIMEOUT_MS": "2000",
                        "VIGIL_NOTIFY_STORM_COUNT": "100000"}
        with reaped(scheduler), reaped(executor):
            rng = random.Random(7)
            for _ in range(KILLS):
                ev = role("evaluator", tmp_path / "evaluator.log", evaluator_env)
                nt = role("notifier", tmp_path / "notifier.log", notifier_env)
                with reaped(ev), reaped(nt):
                    seen = len(hook.requests)

                    async def notified(before: int = seen) -> bool:
                        return len(hook.requests) > before + 3
                    await wait_for(notified, timeout=60)
                    for proc in rng.sample([ev, nt], 2):  # mid-batch, mid-send, somewhere
                        await asyncio.sleep(rng.uniform(0, 0.5))
                        proc.kill()
                        await asyncio.to_thread(proc.wait)
            ev = role("evaluator", tmp_path / "evaluator.log", evaluator_env)
            nt = role("notifier", tmp_path / "notifier.log", notifier_env)
            with reaped(ev), reaped(nt):
                # The last run lasts a while too; then no more checks, and all catch up.
                await asyncio.sleep(3)
                for proc in (scheduler, executor):
                    proc.terminate()
                    await asyncio.to_thread(proc.wait, 30)
                await wait_for(lambda: drained(r, keys.results, EVALUATOR_GROUP), timeout=60)
                ev.terminate()
                await asyncio.to_thread(ev.wait, 30)
                await wait_for(lambda: drained(r, keys.events, NOTIFIER_GROUP), timeout=60)
                live = [Event.from_json(f[EVENT_FIELD]) for _, f in await r.xrange(keys.events)]
                wanted = notifications(live)

                async def all_sent() -> bool:
                    return len(hook.delivered) >= len(wanted)
                await wait_for(all_sent, timeout=60)
                nt.terminate()
                await asyncio.to_thread(nt.wait, 30)
    counts = Counter(e.id for e in live)
    assert [i for i, n in counts.items() if n > 1] == []
    # The same results evaluated once, without interruption, per monitor in scheduled order.
    results: dict[str, list[CheckResult]] = defaultdict(list)
    for _, fields in await r.xrange(keys.results):
        result = CheckResult.from_json(event_of(fields))
        results[result.monitor_id].append(result)
    expected: list[Event] = []
    for monitor in monitors:
        rules = Rules.of_row({"interval_ms": monitor.interval_ms,
                              "timeout_ms": monitor.timeout_ms, "regions": monitor.regions,
                              "alerting": monitor.alerting.model_dump()})
        state = MonitorState()
        for result in sorted(results[monitor.id], key=lambda res: res.scheduled_ms):
            expected += evaluate(monitor.id, state, rules, result).events
    # Once the checks stopped, the regions went silent: staleness after the last result is
    # the only thing the live run may add.
    last = {mid: max(res.scheduled_ms for res in rs) for mid, rs in results.items()}
    assert [e.id for e in live if e.id.endswith(":stale") and e.at_ms < last[e.monitor_id]] == []
    assert sorted(e.id for e in live if not e.id.endswith(":stale")) == sorted(
        e.id for e in expected)
    assert sum(e.type == "incident.opened" for e in live) >= MONITORS
    # Each notification once at the receiver (a retry carries the same webhook-id).
    got = sorted((d["message"], d["event"]["id"]) for d in hook.delivered.values())
    assert got == wanted
    assert hook.bad_signatures == 0
