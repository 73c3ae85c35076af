"""Scrapes of real ports on a real redis-server: a role's --metrics-port and the api's /metrics
show the stream and group gauges as Redis has them at the scrape, and only the role's own
metrics; with Redis stopped a scrape still answers 200, without those gauges, and the log
says so once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from engine.connections import redis_client
from engine.exporter import Exporter, MetricsServer
from engine.keys import CLICKHOUSE_GROUP, EXECUTOR_GROUP, STATUS_GROUP, Keys
from engine.metrics import ROLE_METRICS
from engine.streams import EVENT_FIELD, ensure_group
from tests.support.helpers import free_port, reaped, running, vigil_env, wait_for
from tests.support.servers import api_client
from tests.support.up import interrupt, vigil_up
from vigil.embedded import RedisServer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
GAUGES = ("vigil_stream_length", "vigil_stream_oldest_age_seconds", "vigil_group_pending",
          "vigil_group_lag", "vigil_group_consumers", "vigil_group_behind_seconds")
AWAY = "reading the stream gauges failed; retrying until it works"


def parsed(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def gauges(samples: Samples) -> Samples:
    return {k: v for k, v in samples.items() if k[0] in GAUGES}


async def scrape_text(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        return await resp.text()


async def scrape(url: str) -> Samples:
    return parsed(await scrape_text(url))


async def answers(url: str) -> bool:
    try:
        await scrape(url)
    except aiohttp.ClientConnectionError:
        return False
    return True


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[tuple[RedisServer, aioredis.Redis]]:
    """A redis-server of this test's own, to stop and start again."""
    server = RedisServer(tmp_path / "redis", port=free_port())
    server.start()
    client = redis_client(server.url)
    try:
        yield server, client
    finally:
        await client.aclose()
        server.stop()


async def fill(r: aioredis.Redis, keys: Keys) -> None:
    """Region eu: 5 checks, 2 read by one executor; region us: 1; results: 3, 1 read by the
    ClickHouse sink, the status sink's group reading nothing yet."""
    eu, us = keys.checks("eu"), keys.checks("us")
    await r.sadd(keys.regions, "eu", "us")  # plans name them (the sync keeps the set)
    for stream, n in ((eu, 5), (us, 1), (keys.results, 3)):
        for _ in range(n):
            await r.xadd(stream, {EVENT_FIELD: b"{}"})
    for stream, group in ((eu, EXECUTOR_GROUP), (us, EXECUTOR_GROUP),
                          (keys.results, CLICKHOUSE_GROUP), (keys.results, STATUS_GROUP)):
        await ensure_group(r, stream, group)
    await r.xreadgroup(EXECUTOR_GROUP, "executor-1", {eu: ">"}, count=2)
    await r.xreadgroup(CLICKHOUSE_GROUP, "sink-1", {keys.results: ">"}, count=1)


async def test_an_executor_port_shows_its_group_as_redis_has_it_and_outlives_redis(own_redis):
    server, r = own_redis
    keys = Keys()
    await fill(r, keys)
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    eu = {"stream": keys.checks("eu"), "group": EXECUTOR_GROUP}
    async with running(MetricsServer(Exporter(r, keys, ["executor"], "eu"), port, "127.0.0.1")):
        await wait_for(lambda: answers(url))
        samples = await scrape(url)
        assert value(samples, "vigil_stream_length", stream=keys.checks("eu")) == 5
        assert value(samples, "vigil_group_pending", **eu) == 2
        assert value(samples, "vigil_group_lag", **eu) == 3
        assert value(samples, "vigil_group_consumers", **eu) == 1
        assert value(samples, "vigil_group_behind_seconds", **eu) is not None
        # Its own region's group only: not another region's, nor the sinks'.
        assert {dict(k[1])["stream"] for k in gauges(samples)} == {keys.checks("eu")}
        assert value(samples, "vigil_checks_inflight") == 0
        assert not any(name.startswith("vigil_sink") for name, _ in samples)

        # Read at the scrape, not at an upkeep: two more checks show at once.
        await r.xadd(keys.checks("eu"), {EVENT_FIELD: b"{}"})
        await r.xadd(keys.checks("eu"), {EVENT_FIELD: b"{}"})
        samples = await scrape(url)
        assert value(samples, "vigil_stream_length", stream=keys.checks("eu")) == 7
        assert value(samples, "vigil_group_lag", **eu) == 5

        server.stop()
        with capture_logs() as logs:
            for _ in range(3):
                samples = await scrape(url)
                assert not gauges(samples)
                assert value(samples, "vigil_checks_inflight") == 0
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == [AWAY]

        server.start()  # empty: no persistence
        await fill(r, keys)

        async def back() -> bool:
            return value(await scrape(url), "vigil_group_pending", **eu) == 2

        with capture_logs() as logs:
            await wait_for(back)
        assert "reading the stream gauges works again" in [e["event"] for e in logs]


async def test_the_api_metrics_show_every_stream_and_group(client, r, keys):
    await fill(r, keys)
    resp = await client.get("/metrics")
    assert resp.status == 200
    samples = parsed(await resp.text())
    assert value(samples, "vigil_stream_length", stream=keys.checks("eu")) == 5
    assert value(samples, "vigil_stream_length", stream=keys.checks("us")) == 1
    assert value(samples, "vigil_stream_length", stream=keys.results) == 3
    assert value(samples, "vigil_stream_length", stream=keys.deadletter) == 0
    assert value(samples, "vigil_group_pending", stream=keys.checks("us"),
                 group=EXECUTOR_GROUP) == 0
    results = {"stream": keys.results}
    assert value(samples, "vigil_group_pending", **results, group=CLICKHOUSE_GROUP) == 1
    assert value(samples, "vigil_group_lag", **results, group=CLICKHOUSE_GROUP) == 2
    assert value(samples, "vigil_group_lag", **results, group=STATUS_GROUP) == 3
    assert value(samples, "vigil_group_consumers", **results, group=STATUS_GROUP) == 0
    assert value(samples, "vigil_stream_oldest_age_seconds", stream=keys.results) is not None


async def test_the_api_metrics_answer_with_redis_stopped(own_redis, pool, ch, clean):
    server, r = own_redis
    keys = Keys()
    await fill(r, keys)
    async with api_client(r, pool, ch, keys) as api:
        assert gauges(parsed(await (await api.get("/metrics")).text()))
        server.stop()
        with capture_logs() as logs:
            resp = await api.get("/metrics")
            assert resp.status == 200
            samples = parsed(await resp.text())
    assert not gauges(samples)
    assert value(samples, "process_cpu_seconds_total") is not None
    assert AWAY in [e["event"] for e in logs]


def executor(redis_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = vigil_env(VIGIL_REDIS_URL=redis_url, VIGIL_REGION="eu", VIGIL_CONCURRENCY="7",
                    VIGIL_SECRET_KEY=os.environ["VIGIL_SECRET_KEY"])
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "vigil.cli", "executor",
                                 "--metrics-port", str(port)], env=env, stdout=out, stderr=out)


async def test_vigil_executor_exports_only_executor_metrics(r, redis_url, keys, tmp_path):
    """The real process: `vigil executor --metrics-port`."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    proc = executor(redis_url, port, tmp_path / "executor.log")
    eu = {"stream": keys.checks("eu"), "group": EXECUTOR_GROUP}
    with reaped(proc):

        async def reading() -> bool:
            if not await answers(url):
                return False
            samples = await scrape(url)
            return (value(samples, "vigil_group_consumers", **eu) == 1
                    and value(samples, "vigil_checks_concurrency") == 7)

        await wait_for(reading, timeout=30)
        text = await scrape_text(url)
    own = {f.name for c in ROLE_METRICS["executor"] for f in c.collect()}
    # The text format shows a counter's or histogram's creation time as a gauge of its own.
    exported = {f.name.removesuffix("_created") for f in text_string_to_metric_families(text)}
    assert {name for name in exported if name.startswith("vigil_")} <= own | set(GAUGES)
    assert "process_resident_memory_bytes" in exported
    assert value(parsed(text), "vigil_group_pending", **eu) == 0


MONITORS = """
monitors:
  - id: closed
    kind: tcp
    interval: 1s
    timeout: 500ms
    tcp: {host: 127.0.0.1, port: 9}
"""


@pytest.mark.e2e
@pytest.mark.timeout(180)
async def test_vigil_up_exports_every_role(tmp_path, r, pool, ch, clean, redis_url,
                                           postgres_dsn, keys):
    """All roles in one process: the api's /metrics and --metrics-port show the same."""
    (tmp_path / "monitors.yaml").write_text(MONITORS)
    port, metrics_port = free_port(), free_port()
    async with vigil_up(tmp_path, port, "--redis-url", redis_url, "--postgres-dsn",
                        postgres_dsn, "--examples", str(tmp_path / "monitors.yaml"),
                        "--metrics-port", str(metrics_port)) as proc:

        async def checked() -> bool:
            samples = await scrape(f"http://127.0.0.1:{port}/metrics")
            return bool(value(samples, "vigil_check_results_total", kind="tcp",
                              region="default", outcome="down"))

        await wait_for(checked, timeout=60, every=0.5)
        texts = [await scrape_text(f"http://127.0.0.1:{p}/metrics") for p in (port, metrics_port)]
        await interrupt(proc)
    everything = {f.name for cs in ROLE_METRICS.values() for c in cs for f in c.collect()}
    for text in texts:
        exported = {f.name for f in text_string_to_metric_families(text)}
        assert everything <= exported
        streams = {dict(labels).get("stream") for name, labels in gauges(parsed(text))}
        assert {keys.checks("default"), keys.results, keys.events} <= streams


async def test_a_scheduler_scrape_asks_redis_nothing():
    """The scheduler reads no stream: its scrape neither reads Redis nor warns when it is
    away (here: a port nobody listens on)."""
    r = redis_client(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with capture_logs() as logs:
            samples = parsed((await Exporter(r, Keys(), ["scheduler"]).render()).decode())
            # Counted by whatever ran in this process before: present is what matters.
            assert value(samples, "vigil_checks_dispatched_total") is not None
            executor = parsed((await Exporter(r, Keys(), ["executor"], "eu").render()).decode())
    finally:
        await r.aclose()
    assert not gauges(samples)
    assert not gauges(executor)
    assert [e["event"] for e in logs] == [AWAY]  # the executor's, which reads its stream
