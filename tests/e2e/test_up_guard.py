"""`vigil up` cannot be turned on itself: monitors aimed at its embedded redis-server (a unix
socket) and embedded Postgres end `denied`, with no setting given, while a monitor of any
other target runs as usual."""

from __future__ import annotations

import asyncpg
import pytest
import yaml

from tests.support.helpers import free_port, wait_for
from tests.support.up import interrupt, vigil_up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


async def test_vigil_up_denies_monitors_of_its_own_servers(home):
    data = home / "data"
    redis_socket = data / "redis" / "redis.sock"
    pg_dir = data / "postgres"
    monitors = [
        {"id": "own-redis", "kind": "redis", "interval": "2s", "timeout": "1s",
         "redis": {"url": f"unix://{redis_socket}"}},
        {"id": "own-postgres", "kind": "postgres", "interval": "2s", "timeout": "1s",
         "postgres": {"dsn": f"postgresql://postgres@/postgres?host={pg_dir}",
                      "query": "SELECT CAST(pg_read_file('/etc/passwd') AS int)"}},
        {"id": "closed-port", "kind": "tcp", "interval": "2s", "timeout": "1s",
         "tcp": {"host": "127.0.0.1", "port": free_port()}},
    ]
    path = home / "monitors.yaml"
    path.write_text(yaml.safe_dump({"monitors": monitors}))
    async with vigil_up(home, free_port(), "--examples", str(path)) as proc:
        # The wheel puts the socket in the data directory when its path is short enough.
        assert (pg_dir / "postmaster.pid").read_text().splitlines()[4] == str(pg_dir)
        assert redis_socket.is_socket()
        conn = await asyncpg.connect(f"postgresql://postgres@/postgres?host={pg_dir}")
        try:
            async def all_seen() -> bool:
                return await conn.fetchval("SELECT count(*) FROM monitor_status") == 3

            await wait_for(all_seen, timeout=60, every=0.5)
            rows = {r["monitor_id"]: r for r in await conn.fetch(
                "SELECT monitor_id, error_kind, error FROM monitor_status")}
        finally:
            await conn.close()
        await interrupt(proc)
    assert rows["own-redis"]["error_kind"] == "denied"
    assert f"denied: {redis_socket} is Vigil's own Redis" in rows["own-redis"]["error"]
    assert rows["own-postgres"]["error_kind"] == "denied"
    assert "is Vigil's own Postgres (VIGIL_POSTGRES_DSN)" in rows["own-postgres"]["error"]
    assert "root:" not in rows["own-postgres"]["error"]
    assert rows["closed-port"]["error_kind"] == "connect"
