"""The ClickHouse client, chosen by URL: `http(s)://` for a server, `chdb:///path` for embedded
chDB, both through clickhouse-connect.

clickhouse-connect's chDB backend is synchronous only, so every call runs on one worker thread:
the event loop never blocks, and calls on one client never overlap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import clickhouse_connect


class ClickHouse:
    _shared: dict[str, ClickHouse] = {}

    def __init__(self, url: str) -> None:
        self.url = url
        self.embedded = url.startswith("chdb://")
        self._client: Any = clickhouse_connect.get_client(dsn=url)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._users = 0

    @classmethod
    def from_url(cls, url: str) -> ClickHouse:
        """chDB admits one engine per data path in a process: roles sharing a process share it."""
        client = cls._shared.get(url)
        if client is None:
            client = cls._shared[url] = cls(url)
        client._users += 1
        return client

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: fn(*args, **kwargs))

    async def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return await self._run(self._client.command, sql, parameters=parameters)

    async def rows(self, sql: str,
                   parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        result = await self._run(self._client.query, sql, parameters=parameters)
        return list(result.result_rows)

    async def insert(self, table: str, rows: Sequence[Sequence[Any]],
                     column_names: Sequence[str]) -> None:
        await self._run(self._client.insert, table, rows, column_names=list(column_names))

    async def close(self) -> None:
        self._users -= 1
        if self._users > 0:
            return
        self._shared.pop(self.url, None)
        await self._run(self._client.close)
        self._thread.shutdown(wait=True)
