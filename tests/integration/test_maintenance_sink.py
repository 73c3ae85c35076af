"""The ClickHouse sink keeps a result's maintenance flag (migration 0005), on real Redis and
chDB: what the uptime figures leave out is what the executor flagged, nothing else."""

from __future__ import annotations

from engine.keys import CLICKHOUSE_GROUP
from sinks.clickhouse import ClickHouseSink
from tests.integration.test_sinks import SETTINGS, T0, publish, run_sink
from tests.support.helpers import check_result


async def test_the_flag_reaches_check_results(r, keys, ch, clean):
    batch = [check_result("db", T0 + i * 1_000, "down", maintenance=i % 2 == 0)
             for i in range(10)]
    await publish(r, keys, batch)
    await run_sink(ClickHouseSink(r, keys, SETTINGS, ch=ch), r, keys, CLICKHOUSE_GROUP)
    rows = await ch.rows("SELECT check_id, maintenance FROM check_results FINAL ORDER BY check_id")
    assert rows == sorted((res.check_id, res.maintenance) for res in batch)
