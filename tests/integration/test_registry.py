"""Executors announce the region they serve; `monitors apply` warns about a region nothing
serves (regions are free-form: a typo is enough for checks that never run)."""

from __future__ import annotations

import json

from engine import registry
from engine.clock import redis_ms
from engine.settings import Settings
from executors.service import Executor
from vigil import admin


async def test_an_executor_announces_its_region(r, keys):
    executor = Executor(r, keys, Settings(instance_id="exec-eu", region="eu"))
    await executor.clock.sync()
    await executor.heartbeat()
    [seen] = await registry.executors(r, keys)
    assert (seen.instance, seen.region) == ("exec-eu", "eu")
    assert registry.served([seen], await redis_ms(r)) == ({"eu"}, {"eu"})


async def test_apply_warns_about_regions_nothing_serves(r, keys, pool, clean, redis_url,
                                                        tmp_path, capsys):
    now = await redis_ms(r)
    await registry.beat(r, keys, "exec-a", "default", now)
    await registry.beat(r, keys, "exec-old", "us", now - registry.ALIVE_MS - 1)
    path = tmp_path / "monitors.yaml"
    path.write_text(json.dumps({"monitors": [
        {"id": f"m-{region}", "kind": "tcp", "regions": [region],
         "tcp": {"host": "127.0.0.1", "port": 9}} for region in ("default", "us", "eu-wset")]}))
    await admin.apply(pool, str(path), prune=False, dry_run=True, served_by=(redis_url, keys))
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [
        "warning: region 'eu-wset': no executor has ever served it; its checks run once one "
        "does (VIGIL_REGION=eu-wset)",
        "warning: region 'us': no executor serves it now"]


async def test_apply_still_works_when_redis_cannot_be_asked(pool, clean, tmp_path, capsys,
                                                            keys):
    path = tmp_path / "monitors.yaml"
    path.write_text(json.dumps({"monitors": [{"id": "m", "kind": "tcp",
                                              "tcp": {"host": "127.0.0.1", "port": 9}}]}))
    await admin.apply(pool, str(path), prune=False, dry_run=False,
                      served_by=("redis://127.0.0.1:9/0", keys))
    out = capsys.readouterr()
    assert "cannot tell which regions executors serve" in out.err
    assert "1 created" in out.out


async def test_executors_gone_a_day_are_dropped_from_the_registry(r, keys):
    executor = Executor(r, keys, Settings(instance_id="exec-now", region="eu"))
    await executor.clock.sync()
    await executor.heartbeat()
    now = await redis_ms(r)
    await registry.beat(r, keys, "exec-yesterday", "eu", now - registry.FORGET_MS - 1)
    await executor.forget_gone()
    assert [s.instance for s in await registry.executors(r, keys)] == ["exec-now"]
