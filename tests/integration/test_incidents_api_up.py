"""The whole chain in a real `vigil up`: scheduler, executor, evaluator and the incidents sink
turn a target that is down into an open incident and a confirmed status the API shows."""

from __future__ import annotations

import aiohttp
import pytest

from api import tokens
from tests.support.events import clear_projections
from tests.support.helpers import free_port, wait_for
from tests.support.up import interrupt, vigil_up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
MONITORS = """
monitors:
  - id: closed
    kind: tcp
    interval: 1s
    timeout: 500ms
    tcp: {host: 127.0.0.1, port: 9}
    alerting: {confirm_down: 2}
"""


async def test_a_down_target_is_an_open_incident_in_the_api(tmp_path, r, pool, ch, clean,
                                                             redis_url, postgres_dsn):
    await clear_projections(pool, ch)
    await pool.execute("TRUNCATE api_tokens")
    token = await tokens.create(pool, "e2e", "read")
    (tmp_path / "monitors.yaml").write_text(MONITORS)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    async with (vigil_up(tmp_path, port, "--redis-url", redis_url, "--postgres-dsn",
                         postgres_dsn, "--examples", str(tmp_path / "monitors.yaml")) as proc,
                aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http):

        async def opened() -> list:
            async with http.get(f"{api}/incidents", params={"state": "open"}) as resp:
                return list((await resp.json())["incidents"])

        await wait_for(opened, timeout=60, every=0.5)
        [incident] = await opened()
        assert incident["monitor_id"] == "closed"
        assert incident["id"] == f"closed:{incident['opened_ms']}"
        assert incident["first_check_id"].startswith("closed:default:")
        assert (incident["regions"], incident["error_kind"]) == ({"default": "down"}, "connect")
        async with http.get(f"{api}/monitors/closed/confirmed") as resp:
            confirmed = await resp.json()
        assert confirmed["status"]["status"] == "down"
        assert [(c["region"], c["status"]) for c in confirmed["regions"]] == [("default", "down")]
        await interrupt(proc)
