"""Commands next to a running `vigil up`, as a new user tries them: in another terminal, with
nothing set by hand, `vigil monitors list`, `vigil monitors apply` and `vigil tokens create`
find its servers through the data directory; its demo monitors probe the port it serves, not
8080; once it stops, the data directory names no server any more."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support.helpers import free_port, vigil_env, wait_for
from tests.support.up import interrupt, vigil_up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def vigil(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A command as typed in another terminal: no VIGIL_ variable, from `cwd`."""
    return subprocess.run([sys.executable, "-m", "vigil.cli", *args], env=vigil_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


async def test_commands_beside_vigil_up_just_work(home):
    port = free_port()  # not 8080: the demo monitors must follow it
    data = home / "data"
    mine = home / "mine.yaml"
    mine.write_text("monitors:\n  - id: mine\n    kind: tcp\n"
                    "    tcp: {host: 127.0.0.1, port: 9}\n")
    async with vigil_up(home, port) as proc:
        listed = await asyncio.to_thread(vigil, home, "monitors", "list", "--data-dir", str(data))
        assert listed.returncode == 0, listed.stderr
        assert "vigil-health" in listed.stdout
        applied = await asyncio.to_thread(vigil, home, "monitors", "apply", "-f", str(mine),
                                          "--data-dir", str(data))
        assert applied.returncode == 0, applied.stderr
        assert "+ create mine" in applied.stdout
        token = await asyncio.to_thread(vigil, home, "tokens", "create", "me", "--scope",
                                        "write", "--data-dir", str(data))
        assert token.returncode == 0, token.stderr
        assert token.stdout.strip().startswith("vigil_")
        async with aiohttp.ClientSession() as http:

            async def health_probe_up() -> bool:
                async with http.get(f"http://127.0.0.1:{port}/api/v1/status") as resp:
                    body = await resp.json()
                return any(m["id"] == "vigil-health" and m["status"] == "up"
                           for m in body["monitors"])

            await wait_for(health_probe_up, timeout=60, every=0.5)
        await interrupt(proc)
    log = (home / "up.log").read_text()
    assert f"vigil monitors list --data-dir {data}" in log
    assert not (data / "servers.json").exists()
    after = await asyncio.to_thread(vigil, home, "monitors", "list", "--data-dir", str(data))
    assert after.returncode != 0  # nothing runs there: the defaults, which nothing serves
