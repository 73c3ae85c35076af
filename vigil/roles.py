"""Build the services for a set of roles on shared connections, and run them.

Each role is its own process in production (`vigil scheduler`, ...); `vigil up` and
`vigil run ROLE...` put several in one process, sharing one Redis client, one Postgres pool
and one ClickHouse client (chDB admits one engine per data path and process).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import asyncpg
import redis.asyncio as aioredis
import structlog

from api.app import Api, make_app
from engine.clickhouse import ClickHouse
from engine.connections import postgres_pool, ready, redis_client
from engine.exporter import Exporter, MetricsServer
from engine.service import Service, install_stop_signals, run_all
from engine.settings import Settings
from engine.shards import Layout
from evaluator.service import Evaluator
from executors.kinds import SCHEMA
from executors.service import Executor
from notifier.service import Notifier
from scheduler.service import Scheduler
from sinks.clickhouse import ClickHouseSink
from sinks.incidents import IncidentsSink
from sinks.rollups import RollupSettler
from sinks.status import StatusSink
from sinks.status_events import StatusEventsSink

ROLES = ("scheduler", "executor", "evaluator", "sink-clickhouse", "sink-status", "api",
         "notifier", "sink-incidents", "sink-status-events")


async def run_roles(roles: list[str], settings: Settings, host: str = "127.0.0.1",
                    port: int = 8080, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    install_stop_signals(stop)
    structlog.contextvars.bind_contextvars(instance_id=settings.instance_id)
    shards = Layout.of(settings.shards, settings.served)
    async with AsyncExitStack() as stack:
        r = redis_client(settings.redis_url)
        stack.push_async_callback(r.aclose)
        await ready(r)
        pool: asyncpg.Pool | None = None
        ch: ClickHouse | None = None
        if {"scheduler", "api", "notifier"} & set(roles):
            pool = await postgres_pool(settings.postgres_dsn)
            stack.push_async_callback(pool.close)
        if {"sink-clickhouse", "api", "sink-status-events"} & set(roles):
            ch = ClickHouse.from_url(settings.clickhouse_url)
            stack.push_async_callback(ch.close)
        # One exporter for the process: its roles' metrics, at --metrics-port and /metrics;
        # the api's shows every shard's streams, the other roles' the shards they serve.
        exporter = Exporter(r, shards.all if "api" in roles else shards.served, roles,
                            settings.region)
        services: list[Service] = ([MetricsServer(exporter, settings.metrics_port,
                                                  settings.metrics_host)]
                                   if settings.metrics_port else [])
        for role in roles:
            services += _services(role, r, pool, ch, shards, settings, exporter, host, port)
        await run_all(services, stop)


def _services(role: str, r: aioredis.Redis, pool: asyncpg.Pool | None, ch: ClickHouse | None,
              shards: Layout, settings: Settings, exporter: Exporter, host: str,
              port: int) -> list[Service]:
    """One role's services: a role that reads one shard's stream runs once per shard it
    serves; the scheduler, the executor (one concurrency budget) and the notifier serve all
    of theirs in one."""
    if role == "scheduler":
        assert pool is not None
        return [Scheduler(r, pool, shards.served, settings.reconcile_s, settings.postgres_dsn,
                          settings.claim_idle_ms, shards=shards.count)]
    if role == "executor":
        # The checks-per-minute ceiling is one bucket for every executor, in the first shard.
        return [Executor(r, shards.served, settings, ceiling_keys=shards.all[0])]
    if role == "evaluator":
        return [Evaluator(r, keys, settings) for keys in shards.served]
    if role == "sink-clickhouse":
        assert ch is not None
        # The rollups' settle step rides with every ClickHouse sink, one at a time by a Redis
        # lock (sinks/rollups.py) in the first shard, whichever shards a process serves.
        return [*(ClickHouseSink(r, keys, settings, ch=ch) for keys in shards.served),
                RollupSettler(ch, r, shards.all[0])]
    if role == "sink-status":
        return [StatusSink(r, keys, settings, postgres_dsn=settings.postgres_dsn)
                for keys in shards.served]
    if role == "sink-incidents":
        return [IncidentsSink(r, keys, settings, postgres_dsn=settings.postgres_dsn)
                for keys in shards.served]
    if role == "sink-status-events":
        assert ch is not None
        return [StatusEventsSink(r, keys, settings, ch=ch) for keys in shards.served]
    if role == "notifier":
        assert pool is not None
        return [Notifier(r, pool, shards.served, settings)]
    assert pool is not None
    assert ch is not None
    return [Api(make_app(r, pool, ch, shards, SCHEMA, exporter), host, port)]
