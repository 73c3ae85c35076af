"""What every API handler reads from its application: the shared clients, the schema, the
token check and the failed-authentication buckets."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from api.limits import Buckets
from api.tokens import TokenCheck
from engine.clickhouse import ClickHouse
from engine.monitors import MonitorSchema
from engine.shards import Layout

REDIS: web.AppKey[aioredis.Redis] = web.AppKey("redis", aioredis.Redis)
PG: web.AppKey[asyncpg.Pool] = web.AppKey("pg", asyncpg.Pool)
CH: web.AppKey[ClickHouse] = web.AppKey("ch", ClickHouse)
# The deployment's shards: the API serves every one (a push goes to its monitor's shard).
SHARDS: web.AppKey[Layout] = web.AppKey("shards", Layout)
# The monitor definition for the kinds this deployment runs (executors.kinds.SCHEMA).
SCHEMA: web.AppKey[MonitorSchema] = web.AppKey("schema", MonitorSchema)
TOKENS: web.AppKey[TokenCheck] = web.AppKey("tokens", TokenCheck)
# Failed authentications per client address (api.auth), shared by every route of the app.
FAILURES: web.AppKey[Buckets] = web.AppKey("failures", Buckets)
