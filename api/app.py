"""`vigil api`: the application (open status routes and page, the monitors API, the push
endpoint, its OpenAPI document) and the service that serves it."""

from __future__ import annotations

import asyncio

import asyncpg
import redis.asyncio as aioredis
import structlog
from aiohttp import web

from api import state
from api.auth import failure_buckets
from api.badges import add_badge_routes
from api.channels import add_channel_routes
from api.errors import json_errors
from api.headers import secure
from api.incidents import add_incident_routes
from api.live import add_live_routes
from api.maintenance import add_maintenance_routes
from api.monitors import add_monitor_routes
from api.openapi import add_openapi_route
from api.page import add_page_routes
from api.push import add_push_routes
from api.queue import add_queue_routes
from api.reference import add_reference_routes
from api.sla import add_sla_routes
from api.status import EXPORTER, add_status_routes
from api.status_pages import add_status_page_routes
from api.text import nul_free
from api.tokens import TokenCheck
from engine.clickhouse import ClickHouse
from engine.exporter import Exporter
from engine.keys import Keys
from engine.monitors import MonitorSchema
from engine.shards import Layout

# Bodies are monitor definitions: small; a cap keeps a client from holding memory.
CLIENT_MAX_SIZE = 256 * 1024
log = structlog.get_logger(component="api")


def make_app(r: aioredis.Redis, pool: asyncpg.Pool, ch: ClickHouse, keys: Keys | Layout,
             schema: MonitorSchema, exporter: Exporter | None = None) -> web.Application:
    """`keys`: the deployment's shards (one shard's Keys: a deployment of one); `exporter`:
    what /metrics shows, the process's (vigil.roles); the api's own if None."""
    shards = Layout.single(keys) if isinstance(keys, Keys) else keys
    app = web.Application(client_max_size=CLIENT_MAX_SIZE, middlewares=[json_errors, nul_free])
    app[state.REDIS] = r
    app[state.PG] = pool
    app[state.CH] = ch
    app[state.SHARDS] = shards
    app[state.SCHEMA] = schema
    app[state.TOKENS] = TokenCheck(pool)
    app[state.FAILURES] = failure_buckets()
    app[EXPORTER] = exporter or Exporter(r, shards.all, ["api"])
    app.on_response_prepare.append(secure)
    add_page_routes(app)
    add_live_routes(app)
    add_status_page_routes(app)
    add_status_routes(app)
    add_sla_routes(app)
    add_monitor_routes(app)
    add_incident_routes(app)
    add_channel_routes(app)
    add_maintenance_routes(app)
    add_push_routes(app)
    add_queue_routes(app)
    add_openapi_route(app)
    add_badge_routes(app)
    add_reference_routes(app)
    return app


class Api:
    name = "api"

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port

    async def run(self, stop: asyncio.Event) -> None:
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        log.info("api listening", url=f"http://{self.host}:{self.port}")
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
