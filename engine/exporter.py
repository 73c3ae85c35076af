"""What a process exports at a scrape: the registry of its roles (engine.metrics) and the
gauges of the streams and groups they read, read from Redis at that moment, on the process's
event loop. Served at `--metrics-port` (MetricsServer) or by the API at /metrics.

A collector cannot read Redis itself (prometheus-client collects synchronously, and Redis is
read with redis.asyncio), and gauges set by a periodic upkeep would show figures up to a
period old: the scrape's handler awaits StreamGauges.refresh, then renders.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

import redis.asyncio as aioredis
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from redis.exceptions import RedisError

from engine.keys import Keys
from engine.metrics import registry_of
from engine.queue import ROLE_OF, GroupStats, StreamStats, stream_stats
from engine.service import OUTAGES, Outage
from engine.shards import listed

# A scrape waits this long for Redis at most, then answers without the stream gauges.
SCRAPE_REDIS_S = 2.0
# Redis away, or answering what a scrape cannot read (an error reply): the gauges go absent.
AWAY: tuple[type[Exception], ...] = (*OUTAGES, RedisError)
STREAM = ["stream"]
GROUP = ["stream", "group"]
log = structlog.get_logger(component="metrics")


class StreamGauges:
    """Per stream its length and oldest entry's age; per group its pending entries, lag
    (entries not delivered yet), consumers and how long its oldest unread entry has waited;
    as Redis had them at the last `refresh`.

    A process exports the groups its roles read (an executor: its own region's) and their
    streams; the api, the operations view, every stream and group of the shard. Redis away:
    the gauges are absent, the scrape answers all the same, and the log says so once."""

    def __init__(self, r: aioredis.Redis, keys: Keys | Sequence[Keys], roles: Iterable[str],
                 region: str) -> None:
        """`keys`: the shards whose streams it shows (the process's, or every one for the
        api)."""
        self.r = r
        self.shards = listed(keys)
        self.roles = frozenset(roles)
        self.region = region
        self._families: list[Metric] = []
        self._away = Outage("reading the stream gauges")
        # A process whose roles read no stream (a scheduler alone) asks Redis nothing.
        self._reads = "api" in self.roles or bool(self.roles & set(ROLE_OF.values()))

    def wanted(self, stream: StreamStats, group: GroupStats) -> bool:
        if "api" in self.roles:
            return True
        elsewhere = stream.name.startswith("checks:") and stream.name != f"checks:{self.region}"
        return group.role in self.roles and not elsewhere

    async def refresh(self) -> None:
        if not self._reads:
            return
        try:
            async with asyncio.timeout(SCRAPE_REDIS_S):
                # An executor's own region, whether or not a plan names it yet.
                also = [self.region] if "executor" in self.roles and self.region else []
                stats = [s for keys in self.shards
                         for s in await stream_stats(self.r, keys, also)]
            self._away.ok()
        except AWAY as exc:
            self._away.failed(exc)
            self._families = []
            return
        self._families = self.families(stats)

    def families(self, stats: list[StreamStats]) -> list[Metric]:
        length = GaugeMetricFamily("vigil_stream_length", "entries in a stream", labels=STREAM)
        oldest = GaugeMetricFamily("vigil_stream_oldest_age_seconds",
                                   "age of a stream's oldest entry (absent: empty)",
                                   labels=STREAM)
        pending = GaugeMetricFamily("vigil_group_pending",
                                    "entries a group has read and not acknowledged",
                                    labels=GROUP)
        lag = GaugeMetricFamily("vigil_group_lag", "entries a group has not read yet",
                                labels=GROUP)
        behind = GaugeMetricFamily("vigil_group_behind_seconds",
                                   "age of the oldest entry a group has not read yet (0: none)",
                                   labels=GROUP)
        consumers = GaugeMetricFamily("vigil_group_consumers", "consumers a group has",
                                      labels=GROUP)
        for stream in stats:
            groups = [g for g in stream.groups if self.wanted(stream, g)]
            if not groups and "api" not in self.roles:
                continue
            length.add_metric([stream.key], stream.length)
            if stream.oldest_age_ms is not None:
                oldest.add_metric([stream.key], stream.oldest_age_ms / 1000)
            for group in groups:
                labels = [stream.key, group.name]
                pending.add_metric(labels, group.pending)
                if group.lag is not None:  # Redis cannot count it after a deletion
                    lag.add_metric(labels, group.lag)
                behind.add_metric(labels, group.oldest_unread_age_ms / 1000)
                consumers.add_metric(labels, len(group.consumers))
        return [length, oldest, pending, lag, behind, consumers]

    def collect(self) -> Iterable[Metric]:
        return self._families


class Exporter:
    """One process's /metrics: its roles' registry, its groups' gauges read first."""

    def __init__(self, r: aioredis.Redis, keys: Keys | Sequence[Keys], roles: Iterable[str],
                 region: str = "") -> None:
        """`region`: an executor's, whose checks stream it reads."""
        roles = list(roles)
        self.registry: CollectorRegistry = registry_of(roles)
        self.gauges = StreamGauges(r, keys, roles, region)
        self.registry.register(self.gauges)

    async def render(self) -> bytes:
        await self.gauges.refresh()
        return generate_latest(self.registry)

    async def handle(self, _request: web.Request) -> web.Response:
        return web.Response(body=await self.render(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})


class MetricsServer:
    """`--metrics-port`: /metrics of a role's own process (on VIGIL_METRICS_HOST, loopback by
    default), served on the process's event loop, where the gauges read Redis."""

    name = "metrics"

    def __init__(self, exporter: Exporter, port: int, host: str) -> None:
        self.exporter = exporter
        self.port = port
        self.host = host

    async def run(self, stop: asyncio.Event) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self.exporter.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        log.info("metrics listening", url=f"http://{self.host}:{self.port}/metrics")
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
