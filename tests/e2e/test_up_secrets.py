"""`vigil up` with no VIGIL_SECRET_KEY (issue 9.6): it makes a key in its data directory on
first start, readable by its user alone, seals a monitor's password with it, and opens it
again after a restart, so a probe that needs the password keeps passing."""

from __future__ import annotations

import stat
from collections.abc import Iterator

import asyncpg
import pytest
import yaml

from tests.support.helpers import free_port, wait_for
from tests.support.servers import redis_server
from tests.support.up import interrupt, vigil_up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
PASSWORD = "pw-5ecret-up"


@pytest.fixture
def guarded(tmp_path) -> Iterator[str]:
    with redis_server(tmp_path / "redis-auth", PASSWORD) as port:
        yield f"127.0.0.1:{port}"


async def checked_up_after(dsn: str, after_ms: int) -> int:
    """The scheduled_ms of the first `up` result of `cache` scheduled after `after_ms`."""
    conn = await asyncpg.connect(dsn)
    try:
        async def up() -> bool:
            return await conn.fetchval(
                "SELECT count(*) FROM monitor_status WHERE monitor_id = 'cache' "
                "AND status = 'up' AND scheduled_ms > $1", after_ms) > 0

        await wait_for(up, timeout=60, every=0.5)
        spec = await conn.fetchval("SELECT spec::text FROM monitors WHERE id = 'cache'")
        assert PASSWORD not in spec
        scheduled: int = await conn.fetchval(
            "SELECT scheduled_ms FROM monitor_status WHERE monitor_id = 'cache'")
        return scheduled
    finally:
        await conn.close()


async def test_vigil_up_makes_its_key_and_keeps_it_across_restarts(home, guarded):
    data = home / "data"
    dsn = f"postgresql://postgres@/postgres?host={data / 'postgres'}"
    path = home / "monitors.yaml"
    path.write_text(yaml.safe_dump({"monitors": [
        {"id": "cache", "kind": "redis", "interval": "2s", "timeout": "1s",
         "redis": {"url": f"redis://:{PASSWORD}@{guarded}/0"}}]}))
    async with vigil_up(home, free_port(), "--examples", str(path)) as proc:
        first = await checked_up_after(dsn, 0)
        await interrupt(proc)
    key = (data / "secret.key").read_text()
    assert stat.S_IMODE((data / "secret.key").stat().st_mode) == 0o600
    async with vigil_up(home, free_port(), "--examples", "") as proc:
        await checked_up_after(dsn, first)
        await interrupt(proc)
    assert (data / "secret.key").read_text() == key
