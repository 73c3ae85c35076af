"""Quorum across real regions: a `vigil scheduler`, a `vigil evaluator` and one `vigil executor`
per region (eu, us, ap), ap's inside a network namespace of its own joined to the host by a
veth pair. The network between ap's executor and the target is cut (a prohibit route in its
namespace; its way to Redis stays): ap turns down and the monitor stays up, no false outage.
us's executor is killed: us goes silent, eu (up) and ap (down) disagree, and the monitor
keeps its status. Then ap's link goes down altogether, Redis included: ap goes silent too,
eu alone is fewer than the quorum, and the monitor is unknown with a `monitoring.degraded`
event instead of an incident."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from engine.connections import redis_client
from engine.events import Event
from engine.keys import Keys
from engine.streams import EVENT_FIELD
from executors.kinds import SCHEMA
from tests.support.helpers import free_port, reaped, store_monitors, vigil_env, wait_for
from vigil.embedded import RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240),
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                 reason="network namespaces need root and iproute2")]

HOST_IP, NS_IP, TARGET_IP = "10.199.0.1", "10.199.0.2", "10.199.1.1"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def namespace() -> Iterator[str]:
    """A network namespace reaching the host's HOST_IP (Redis) and TARGET_IP (the target)
    over a veth pair; its name."""
    name = f"vq{os.getpid()}"
    host_end, ns_end = f"{name}h", f"{name}n"
    ip("netns", "add", name)
    try:
        ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        ip("link", "set", ns_end, "netns", name)
        ip("addr", "add", f"{HOST_IP}/24", "dev", host_end)
        ip("addr", "add", f"{TARGET_IP}/32", "dev", host_end)
        ip("link", "set", host_end, "up")
        ip("-n", name, "addr", "add", f"{NS_IP}/24", "dev", ns_end)
        ip("-n", name, "link", "set", ns_end, "up")
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", name, "route", "add", f"{TARGET_IP}/32", "via", HOST_IP)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@contextlib.asynccontextmanager
async def target() -> AsyncIterator[str]:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ok", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, TARGET_IP, port).start()
    try:
        yield f"http://{TARGET_IP}:{port}/ok"
    finally:
        await runner.cleanup()


def vigil(role: str, log: Path, env: dict[str, str], netns: str | None = None
          ) -> subprocess.Popen[bytes]:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    with log.open("wb") as out:
        return subprocess.Popen([*prefix, sys.executable, "-m", "vigil.cli", role],
                                env=vigil_env(**env), stdout=out, stderr=out)


async def test_one_region_cut_off_is_no_outage_and_too_few_voters_is_monitoring_degraded(
        pool, clean, postgres_dsn, tmp_path):
    with contextlib.ExitStack() as stack:
        netns = stack.enter_context(namespace())
        redis_port = free_port()
        # Reached from the namespace, so not on loopback alone: with a password.
        server = RedisServer(tmp_path / "redis", port=redis_port, password="quorum",
                             extra_args=["--bind", "127.0.0.1", HOST_IP])
        server.start()
        stack.callback(server.stop)
        r = redis_client(server.url)
        keys = Keys("0")
        async with target() as url:
            await store_monitors(pool, SCHEMA.parse([{
                "id": "site", "kind": "http", "interval": "1s", "timeout": "500ms",
                "regions": ["eu", "us", "ap"], "http": {"url": url},
                "alerting": {"confirm_down": 2, "confirm_up": 1, "stale_after": "3s"}}]),
                source="file")
            env = {"VIGIL_REDIS_URL": f"redis://:quorum@{HOST_IP}:{redis_port}/0",
                   "VIGIL_POSTGRES_DSN": postgres_dsn}
            procs = {"scheduler": vigil("scheduler", tmp_path / "scheduler.log", env),
                     "evaluator": vigil("evaluator", tmp_path / "evaluator.log", env)}
            for region in ("eu", "us", "ap"):
                procs[region] = vigil("executor", tmp_path / f"{region}.log",
                                      {**env, "VIGIL_REGION": region,
                                       "VIGIL_INSTANCE_ID": f"exec-{region}"},
                                      netns if region == "ap" else None)
            for proc in procs.values():
                stack.enter_context(reaped(proc))

            async def events() -> list[Event]:
                return [Event.from_json(f[EVENT_FIELD])
                        for _, f in await r.xrange(keys.events)]

            def seen(event_type: str, status: str | None = None, region: str | None = None):
                async def check() -> bool:
                    return any(e.type == event_type and status in (None, e.status)
                               and region in (None, e.region) for e in await events())
                return check

            await wait_for(seen("monitor.changed", "up"), timeout=60)
            ip("-n", netns, "route", "replace", "prohibit", f"{TARGET_IP}/32")
            await wait_for(seen("status.changed", "down", "ap"), timeout=60)
            procs["us"].kill()
            await wait_for(seen("status.changed", "unknown", "us"), timeout=60)
            ip("-n", netns, "link", "set", f"{netns}n", "down")
            await wait_for(seen("monitoring.degraded"), timeout=60)
            history = await events()
            for proc in procs.values():
                proc.terminate()
            await asyncio.gather(*(asyncio.to_thread(p.wait, 60) for p in procs.values()))
        await r.aclose()
    assert not [e for e in history if e.type == "incident.opened"]
    assert "down" not in [e.status for e in history if e.type == "monitor.changed"]
    degraded = next(e for e in history if e.type == "monitoring.degraded")
    assert degraded.regions == {"eu": "up", "us": "unknown", "ap": "unknown"}
    # Between us going silent and ap too, eu and ap disagreed: the monitor stayed up.
    us_gone = next(e for e in history if e.type == "status.changed" and e.region == "us"
                   and e.status == "unknown")
    ap_gone = next(e for e in history if e.type == "status.changed" and e.region == "ap"
                   and e.status == "unknown")
    assert us_gone.at_ms < ap_gone.at_ms
    assert [e.status for e in history if e.type == "monitor.changed"
            and e.at_ms < ap_gone.at_ms] == ["up"]
    final = [e.status for e in history if e.type == "monitor.changed"][-1]
    assert final == "unknown"
