"""Notifications per second: a real `vigil notifier` turns a bounded burst of incident.opened
events into signed webhooks delivered to a local receiver (127.0.0.1), end to end: events
XADDed to the events stream, the outbox in Postgres, the sender's claims, attempts and
records. The storm guard is off (it would fold the burst into one summary); the receiver
checks every signature and counts each webhook-id once.

    .venv/bin/python bench/notify.py --events 2000 --channels 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import redis.asyncio as aioredis
from aiohttp import web
from procs import REPO, BenchError, report_run, spawn, stop_process, vigil
from stack import Stack, seed_monitors

from engine import channels
from engine.channels import ChannelSpec, new_secret
from engine.connections import postgres_pool
from engine.events import INCIDENT_OPENED, Event, event_id
from engine.keys import NOTIFIER_GROUP, Keys
from engine.secrets import KEY_VARIABLE, Keyring, generate_key
from engine.streams import EVENT_FIELD
from notifier.transports import signature

KEYS = Keys("0")
TIMEOUT_S = 300.0


class Receiver:
    """Counts each message once (by webhook-id) with its arrival time; a bad signature is
    a failed run."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.first_seen: dict[str, float] = {}
        self.requests = 0
        self.bad = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        msg_id, stamp = request.headers["webhook-id"], int(request.headers["webhook-timestamp"])
        self.requests += 1
        if request.headers["webhook-signature"] != signature(self.secret, msg_id, stamp, body):
            self.bad += 1
            return web.Response(status=401)
        self.first_seen.setdefault(msg_id, time.perf_counter())
        return web.Response(text="ok")


def burst(n: int) -> list[bytes]:
    at = int(time.time() * 1000)
    return [Event(type=INCIDENT_OPENED, id=event_id(INCIDENT_OPENED, f"bench-{i:06d}", None, at),
                  monitor_id=f"bench-{i:06d}", at_ms=at, opened_ms=at,
                  incident_id=f"bench-{i:06d}:{at}").to_json() for i in range(n)]


async def setup_channels(dsn: str, count: int, url: str, secret: str) -> None:
    pool = await postgres_pool(dsn)
    try:
        await pool.execute("UPDATE monitors SET tags = '{bench}'")
        await pool.execute("TRUNCATE channels CASCADE")
        for i in range(count):
            await channels.save(pool, ChannelSpec(id=f"bench-{i}", kind="webhook", url=url,
                                                  secret=secret, tags=["bench"]),
                                Keyring.from_env())
    finally:
        await pool.close()


async def measure(stack: Stack, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    secret = new_secret()
    receiver = Receiver(secret)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    await setup_channels(stack.dsn, args.channels, f"http://127.0.0.1:{port}/hook", secret)
    env = {**stack.env, KEY_VARIABLE: os.environ[KEY_VARIABLE],
           "VIGIL_NOTIFY_STORM_COUNT": str(10 * args.events * args.channels)}
    proc = spawn(vigil("notifier"), workdir / "notifier.log", env)
    r = aioredis.Redis(port=stack.redis_port)
    pool = await postgres_pool(stack.dsn)
    try:
        deadline = time.monotonic() + 60
        while not (await r.exists(KEYS.events) and any(
                g["name"] == NOTIFIER_GROUP.encode() for g in await r.xinfo_groups(KEYS.events))):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the notifier did not start; see {workdir / 'notifier.log'}")
            await asyncio.sleep(0.1)
        cpu = psutil.Process(proc.pid)
        cpu0 = sum(cpu.cpu_times()[:2])
        wanted = args.events * args.channels
        started = time.perf_counter()
        async with r.pipeline(transaction=False) as pipe:
            for payload in burst(args.events):
                pipe.xadd(KEYS.events, {EVENT_FIELD: payload})
            await pipe.execute()
        queued_s = None
        while len(receiver.first_seen) < wanted:
            if time.perf_counter() - started > TIMEOUT_S or proc.poll() is not None:
                raise BenchError(f"{len(receiver.first_seen)} of {wanted} delivered; see "
                                 f"{workdir / 'notifier.log'}")
            if queued_s is None and await pool.fetchval(
                    "SELECT count(*) FROM deliveries") >= wanted:
                queued_s = time.perf_counter() - started
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        cpu_s = sum(cpu.cpu_times()[:2]) - cpu0
        arrivals = sorted(t - started for t in receiver.first_seen.values())
    finally:
        code = stop_process(proc)
        await r.aclose()
        await pool.close()
        await runner.cleanup()
    if receiver.bad:
        raise BenchError(f"{receiver.bad} requests with a bad signature")
    return {"events": args.events, "channels": args.channels, "delivered": wanted,
            "requests": receiver.requests, "elapsed_s": elapsed,
            "per_s": wanted / elapsed, "notifier_cpu_s": cpu_s, "outbox_filled_s": queued_s,
            "cpu_ms_per_1000": 1e6 * cpu_s / wanted,
            "p50_s": statistics.median(arrivals),
            "p99_s": arrivals[int(0.99 * (len(arrivals) - 1))],
            "notifier_exit": code}


def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault(KEY_VARIABLE, generate_key())
    workdir = Path(tempfile.mkdtemp(prefix="vigil-bench-notify-"))
    stack = Stack(workdir)
    try:
        stack.start()
        seed_monitors(stack.dsn, args.events, 60_000, 10_000, stack.target_url)
        return asyncio.run(measure(stack, args, workdir))
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def report(res: dict[str, Any]) -> str:
    return (f"{res['delivered']:,} notifications ({res['events']:,} events x "
            f"{res['channels']} webhook channels) delivered in {res['elapsed_s']:.2f} s: "
            f"{res['per_s']:,.0f} notifications/s; notifier CPU "
            f"{res['cpu_ms_per_1000']:,.0f} ms per 1,000; arrival after the burst p50 "
            f"{res['p50_s']:.2f} s, p99 {res['p99_s']:.2f} s; every delivery in the outbox after "
            f"{res['outbox_filled_s'] or 0:.2f} s; {res['requests']:,} requests; "
            f"notifier exit {res['notifier_exit']}")


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=2_000, help="incidents opened at once")
    ap.add_argument("--channels", type=int, default=1, help="webhook channels each goes to")
    args = ap.parse_args()
    os.chdir(REPO)
    return report_run("notify", lambda: run(args), report)


if __name__ == "__main__":
    sys.exit(main())
