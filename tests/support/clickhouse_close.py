"""The last close of a shared ClickHouse client, in a process of its own:
`python -m tests.support.clickhouse_close URL` exits 0 when the last user's close ends the
client (out of the shared table, refusing calls) and the next from_url opens a new client on
the same data. Its own process because chDB keeps one engine per process, and a test session
holds its own open for the whole run."""

from __future__ import annotations

import asyncio
import sys
import uuid

from engine.clickhouse import ClickHouse


async def main(url: str) -> None:
    table = f"vigil_test_close_{uuid.uuid4().hex[:12]}"
    first, second = ClickHouse.from_url(url), ClickHouse.from_url(url)
    assert first is second
    await first.command(f"CREATE TABLE {table} (x UInt8) ENGINE = MergeTree ORDER BY x")
    await first.insert(table, [[7]], ["x"])
    await first.close()
    assert await second.rows(f"SELECT x FROM {table}") == [(7,)], "closed for the other user"
    await second.close()
    assert url not in ClickHouse._shared
    try:
        await second.command("SELECT 1")
    except RuntimeError:
        pass  # its worker thread is shut down
    else:
        raise AssertionError("a closed client still answered")
    reopened = ClickHouse.from_url(url)
    assert reopened is not second
    try:
        assert await reopened.rows(f"SELECT x FROM {table}") == [(7,)], "data lost on reopen"
    finally:
        await reopened.command(f"DROP TABLE {table}")
        await reopened.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
