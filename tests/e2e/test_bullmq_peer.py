"""bench/compare.py's BullMQ peer times a check where BullMQ's users see it finish: each
record on peer:results carries, as finished_ms, the id of the job's `completed` event (Redis's
clock when moveToFinished marked the job completed), recorded by the QueueEvents listener,
not by the worker; and the listener records every job the workers completed."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from engine.streams import parse_id
from tests.support.helpers import wait_for
from tests.support.servers import http_target

PEER = Path(__file__).resolve().parents[2] / "bench" / "peers" / "bullmq"
NODE = shutil.which("node")
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60),
              pytest.mark.skipif(NODE is None or not (PEER / "node_modules" / "bullmq").exists(),
                                 reason="needs node and `npm ci` in bench/peers/bullmq")]


def peer(script: str, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    assert NODE is not None
    with log.open("wb") as out:
        return subprocess.Popen([NODE, script], cwd=PEER, env=env, stdout=out, stderr=out)


def stop(proc: subprocess.Popen[bytes], log: Path) -> dict[str, int]:
    """SIGTERM, wait; the JSON line the process prints last. Called off the event loop: it
    serves the target that the worker's last checks need."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()
    return dict(json.loads(log.read_text().strip().splitlines()[-1]))


async def test_results_are_timed_at_the_completed_event(r, redis_url, tmp_path):
    async with http_target() as url:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PEER_")},
               "PEER_REDIS_URL": redis_url, "PEER_MONITORS": "5", "PEER_INTERVAL_MS": "300",
               "PEER_TARGET_URL": f"{url}/ok?", "PEER_CONCURRENCY": "5"}
        listener = peer("events.js", tmp_path / "events.log", env)
        worker: subprocess.Popen[bytes] | None = None
        try:
            await asyncio.to_thread(subprocess.run, [NODE, "scheduler.js"], cwd=PEER, env=env,
                                    check=True, timeout=30, capture_output=True)
            worker = peer("worker.js", tmp_path / "worker.log", env)

            async def some() -> bool:
                return int(await r.xlen("peer:results")) >= 10

            await wait_for(some, timeout=20)
            completed = (await asyncio.to_thread(stop, worker, tmp_path / "worker.log")
                         )["completed"]
            worker = None

            async def all_recorded() -> bool:
                return int(await r.xlen("peer:results")) >= completed

            await wait_for(all_recorded, timeout=10)
            recorded = await asyncio.to_thread(stop, listener, tmp_path / "events.log")
            assert recorded == {"received": completed}
        finally:
            for proc in (worker, listener):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()
    events = {fields[b"jobId"]: parse_id(eid)[0]
              for eid, fields in await r.xrange("bull:checks:events")
              if fields[b"event"] == b"completed"}
    results = [fields for _, fields in await r.xrange("peer:results")]
    assert len(results) == completed == len(events)
    for fields in results:
        finished = int(fields[b"finished_ms"])
        assert finished == events[fields[b"job_id"]]
        assert fields[b"outcome"] == b"up"
        assert (int(fields[b"scheduled_ms"]) <= int(fields[b"started_ms"])
                <= int(fields[b"checked_ms"]) <= finished <= int(fields[b"received_ms"]))
