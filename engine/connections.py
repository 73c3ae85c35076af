"""Redis and Postgres clients, chosen by URL in one place."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis


def redis_client(url: str) -> aioredis.Redis:
    # Bytes in and out: the hot paths hand payloads to orjson without decoding twice.
    return aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=30)


async def postgres_pool(dsn: str, min_size: int = 1, max_size: int = 4) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
    assert pool is not None
    return pool
