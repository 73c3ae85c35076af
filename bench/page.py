"""The status page with --monitors monitors (1,000) and 90 days of history on chDB and an
embedded Postgres: server time per render (median, p99) and its bytes, cold (both caches
emptied before each), with the ClickHouse figures kept (the HTML cache emptied: most renders)
and from the HTML cache; beside it, the open status API (`/api/v1/status`, one
query and a JSON list of the same monitors) as the baseline measured in the same run.

History: one check every --interval-s per monitor for 90 days (bench/sla.py's generator:
0.5% down, some errors, 2% in maintenance), the rollups settled up to the last hour as the
rollups sink keeps them; 100 monitors per group, ten groups by tag; every monitor with a
confirmed status, 20 resolved incidents with a note and one open.

Run: .venv/bin/python bench/page.py
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from sla import write_raw

from api import page as status_page
from api.app import make_app
from api.state import PG
from api.status import public
from engine import incidents, rollups, status_pages, store
from engine.clickhouse import ClickHouse
from engine.connections import postgres_pool, redis_client
from engine.events import MONITOR_CHANGED, Event, event_id
from engine.keys import Keys
from engine.migrate import migrate
from engine.secrets import Keyring
from engine.status_pages import Page
from executors.kinds import SCHEMA
from vigil.embedded import EmbeddedPostgres

DAY_MS = 86_400_000
GROUP = 100


def monitors(count: int) -> list[Any]:
    return SCHEMA.parse([{"id": f"m-{i}", "name": f"Service {i}", "kind": "tcp",
                          "tags": [f"team-{i // GROUP}"],
                          "tcp": {"host": "127.0.0.1", "port": 9}} for i in range(count)])


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> tuple[list[float], Any]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = await fn()
        times.append((time.perf_counter() - start) * 1000)
    return times, out


def spread(times: list[float]) -> str:
    p99 = statistics.quantiles(times, n=100)[98] if len(times) > 1 else times[0]
    return f"median {statistics.median(times):9.2f} ms  p99 {p99:9.2f} ms"


async def setup(pool: Any, ch: Any, count: int, interval_s: int, now: int) -> None:
    start = time.perf_counter()
    async with pool.acquire() as conn, conn.transaction():
        for monitor in monitors(count):
            await store.upsert(conn, monitor, "api", Keyring([]))
        changes = [Event(type=MONITOR_CHANGED, id=event_id(MONITOR_CHANGED, f"m-{i}", "eu",
                                                           now - DAY_MS), monitor_id=f"m-{i}",
                         at_ms=now - DAY_MS, status="up") for i in range(count)]
        await incidents.project(conn, changes)
    for n in range(21):
        opened = now - (n + 1) * 3 * DAY_MS
        events = [Event(type=t, id=event_id(t, f"m-{n}", "eu", at), monitor_id=f"m-{n}",
                        at_ms=at, incident_id=f"m-{n}:{opened}", opened_ms=opened,
                        resolved_ms=at if t == "incident.resolved" else None)
                  for t, at in (("incident.opened", opened),
                                ("incident.resolved", opened + 600_000))][:1 if n == 0 else 2]
        async with pool.acquire() as conn:
            await incidents.project(conn, events)
        await incidents.add_note(pool, f"m-{n}:{opened}", "ops", "Found the cause; fixed.")
    await status_pages.upsert(pool, Page.model_validate({
        "id": "bench", "title": "Bench status", "groups": [
            {"name": f"Team {g}", "tags": [f"team-{g}"]} for g in range(-(-count // GROUP))]}),
        "api")
    print(f"postgres: {count} monitors, statuses, 21 incidents in "
          f"{time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    since = now - now % DAY_MS - 89 * DAY_MS
    await write_raw(ch, "m-", count, since, now - 60_000, interval_s * 1000, ("all",))
    written = time.perf_counter() - start
    await rollups.settle(ch, now - 3_600_000)
    rows = count * ((now - 60_000 - since) // (interval_s * 1000))
    print(f"chdb: {rows:,} check results (90 days, 1 per {interval_s} s per monitor) written in "
          f"{written:.1f} s, rollups settled in {time.perf_counter() - start - written:.1f} s")


async def bench(app: web.Application, repeat: int) -> None:
    renders, figures = app[status_page.RENDERS], app[status_page.FIGURES]

    async def cold() -> status_page.Rendered | None:
        renders.clear()
        figures.clear()
        return await status_page.rendered(app, "bench")

    async def rerendered() -> status_page.Rendered | None:
        renders.clear()  # the ClickHouse figures kept: what most renders are
        return await status_page.rendered(app, "bench")

    async def baseline() -> bytes:
        rows = await store.status_rows(app[PG])
        return web.json_response({"monitors": [public(r) for r in rows]}).body or b""

    await cold()  # the first query of each kind warms chDB's caches
    base_times, base_body = await timed(baseline, repeat)
    cold_times, page = await timed(cold, repeat)
    warm_times, _ = await timed(rerendered, repeat)
    cached_times, _ = await timed(lambda: status_page.rendered(app, "bench"), repeat)
    assert page is not None
    ratio = statistics.median(cold_times) / statistics.median(base_times)
    print(f"baseline /api/v1/status JSON:   {spread(base_times)}  {len(base_body):>10,} bytes")
    print(f"status page, cold render:       {spread(cold_times)}  {len(page.body):>10,} bytes "
          f"({len(page.gzipped):,} gzipped, as sent)")
    print(f"status page, figures kept:      {spread(warm_times)}")
    print(f"status page, from the cache:    {spread(cached_times)}")
    print(f"cold render / baseline: {ratio:.1f}x, figures kept / baseline: "
          f"{statistics.median(warm_times) / statistics.median(base_times):.1f}x "
          f"(medians of {repeat})")


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="vigil-bench-page-"))
    server = EmbeddedPostgres(work)
    try:
        dsn = server.start()
        ch = ClickHouse.from_url(f"chdb://{work / 'chdb'}")
        await migrate(dsn, ch)
        pool = await postgres_pool(dsn, max_size=8)
        r = redis_client("redis://127.0.0.1:1/0")  # the page reads no Redis; never connected
        now = int(time.time() * 1000)
        await setup(pool, ch, args.monitors, args.interval_s, now)
        app = make_app(r, pool, ch, Keys(), SCHEMA)
        await bench(app, args.repeat)
        await pool.close()
        await ch.close()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--monitors", type=int, default=1_000)
    parser.add_argument("--interval-s", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=30)
    asyncio.run(main(parser.parse_args()))
