"""Build the services for a set of roles on shared connections, and run them.

Each role is its own process in production (`vigil scheduler`, ...); `vigil up` and
`vigil run ROLE...` put several in one process, sharing one Redis client, one Postgres pool
and one ClickHouse client (chDB admits one engine per data path and process).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import asyncpg
import structlog

from api.app import Api, make_app
from engine.clickhouse import ClickHouse
from engine.connections import postgres_pool, redis_client
from engine.exporter import Exporter, MetricsServer
from engine.keys import Keys
from engine.service import Service, install_stop_signals, run_all
from engine.settings import Settings
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
    keys = Keys(settings.served[0])
    async with AsyncExitStack() as stack:
        r = redis_client(settings.redis_url)
        stack.push_async_callback(r.aclose)
        pool: asyncpg.Pool | None = None
        ch: ClickHouse | None = None
        if {"scheduler", "api", "notifier"} & set(roles):
            pool = await postgres_pool(settings.postgres_dsn)
            stack.push_async_callback(pool.close)
        if {"sink-clickhouse", "api", "sink-status-events"} & set(roles):
            ch = ClickHouse.from_url(settings.clickhouse_url)
            stack.push_async_callback(ch.close)
        # One exporter for the process: its roles' metrics, at --metrics-port and /metrics.
        exporter = Exporter(r, keys, roles, settings.region)
        services: list[Service] = ([MetricsServer(exporter, settings.metrics_port,
                                                  settings.metrics_host)]
                                   if settings.metrics_port else [])
        for role in roles:
            if role == "scheduler":
                assert pool is not None
                services.append(Scheduler(r, pool, keys, settings.reconcile_s,
                                          settings.postgres_dsn, settings.claim_idle_ms))
            elif role == "executor":
                services.append(Executor(r, keys, settings))
            elif role == "evaluator":
                services.append(Evaluator(r, keys, settings))
            elif role == "sink-clickhouse":
                assert ch is not None
                services.append(ClickHouseSink(r, keys, settings, ch=ch))
                # The rollups' settle step rides with every ClickHouse sink, one at a time by
                # a Redis lock (sinks/rollups.py).
                services.append(RollupSettler(ch, r, keys))
            elif role == "sink-status":
                services.append(StatusSink(r, keys, settings, postgres_dsn=settings.postgres_dsn))
            elif role == "sink-incidents":
                services.append(IncidentsSink(r, keys, settings,
                                              postgres_dsn=settings.postgres_dsn))
            elif role == "sink-status-events":
                assert ch is not None
                services.append(StatusEventsSink(r, keys, settings, ch=ch))
            elif role == "notifier":
                assert pool is not None
                services.append(Notifier(r, pool, keys, settings))
            else:
                assert pool is not None
                assert ch is not None
                services.append(Api(make_app(r, pool, ch, keys, SCHEMA, exporter), host, port))
        await run_all(services, stop)
