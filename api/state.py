"""What every API handler reads from its application: the shared clients, the schema, the
token check and the failed-authentication buckets."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from api.limits import Buckets
from api.tokens import TokenCheck
from engine.clickhouse import ClickHouse
from engine.keys import Keys
from engine.monitors import MonitorSchema

REDIS: web.AppKey[aioredis.Redis] = web.AppKey("redis", aioredis.Redis)
PG: web.AppKey[asyncpg.Pool] = web.AppKey("pg", asyncpg.Pool)
CH: web.AppKey[ClickHouse] = web.AppKey("ch", ClickHouse)
KEYS: web.AppKey[Keys] = web.AppKey("keys", Keys)
# The monitor definition for the kinds this deployment runs (executors.kinds.SCHEMA).
SCHEMA: web.AppKey[MonitorSchema] = web.AppKey("schema", MonitorSchema)
TOKENS: web.AppKey[TokenCheck] = web.AppKey("tokens", TokenCheck)
# Failed authentications per client address (api.auth), shared by every route of the app.
FAILURES: web.AppKey[Buckets] = web.AppKey("failures", Buckets)
