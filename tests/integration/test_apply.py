"""Declarative apply: diff, dry run, prune, files versus API monitors."""

from __future__ import annotations

import json

from engine import store
from engine.secrets import Keyring
from executors.kinds import SCHEMA
from tests.support.helpers import store_monitors

# These monitors hold no secret: nothing to seal.
NO_KEY = Keyring([])


def tcp(mid: str, port: int = 9, **kw) -> dict:
    return {"id": mid, "kind": "tcp", "interval": "30s", "tcp": {"host": "127.0.0.1",
                                                                  "port": port}, **kw}


async def ids(pool) -> dict[str, str]:
    return {r["id"]: r["source"] for r in await pool.fetch("SELECT id, source FROM monitors")}


async def test_dry_run_prints_the_diff_and_writes_nothing(pool, clean):
    await store.apply(pool, SCHEMA.parse([tcp("a"), tcp("b")]), prune=False, dry_run=False,
                      keyring=NO_KEY)
    await store_monitors(pool, SCHEMA.parse([tcp("from-api")]), source="api")
    wanted = SCHEMA.parse([tcp("a", port=10), tcp("c")])
    plan = await store.apply(pool, wanted, prune=True, dry_run=True, keyring=NO_KEY)
    assert plan.lines() == ["+ create c", "~ update a (tcp)", "- delete b"]
    assert plan.unchanged == 0
    assert await ids(pool) == {"a": "file", "b": "file", "from-api": "api"}

    plan = await store.apply(pool, wanted, prune=True, dry_run=False, keyring=NO_KEY)
    assert plan.summary() == "1 to create, 1 to update, 1 to delete, 0 unchanged"
    # API monitors are never pruned by files.
    assert await ids(pool) == {"a": "file", "c": "file", "from-api": "api"}
    again = await store.apply(pool, wanted, prune=True, dry_run=False, keyring=NO_KEY)
    assert (again.lines(), again.unchanged) == ([], 2)


async def test_without_prune_nothing_is_deleted_and_files_take_over(pool, clean):
    await store_monitors(pool, SCHEMA.parse([tcp("shared"), tcp("keep")]),
                                source="api")
    plan = await store.apply(pool, SCHEMA.parse([tcp("shared")]), prune=False, dry_run=False,
                             keyring=NO_KEY)
    assert plan.lines() == ["~ update shared (source)"]
    assert await ids(pool) == {"shared": "file", "keep": "api"}


async def test_a_directory_of_files(tmp_path, pool, clean):
    (tmp_path / "team-a").mkdir()
    (tmp_path / "team-a" / "web.yaml").write_text(json.dumps({"monitors": [tcp("a")]}))
    (tmp_path / "db.yml").write_text(json.dumps({"monitors": [tcp("b")]}))
    (tmp_path / "notes.txt").write_text("not monitors")
    monitors = SCHEMA.load_path(str(tmp_path))
    assert sorted(m.id for m in monitors) == ["a", "b"]
    await store.apply(pool, monitors, prune=True, dry_run=False, keyring=NO_KEY)
    assert await ids(pool) == {"a": "file", "b": "file"}


async def test_push_monitors_get_a_stable_unguessable_token(pool, clean):
    push = {"id": "nightly", "kind": "push", "interval": "1h"}
    await store.apply(pool, SCHEMA.parse([push]), prune=False, dry_run=False, keyring=NO_KEY)
    token = await pool.fetchval("SELECT push_token FROM monitors WHERE id = 'nightly'")
    assert len(token) >= 32
    await store.apply(pool, SCHEMA.parse([{**push, "interval": "2h"}]), prune=False,
                      dry_run=False, keyring=NO_KEY)
    assert await pool.fetchval("SELECT push_token FROM monitors") == token
    row = await store.get(pool, "nightly")
    assert store.described(row)["push_url"] == f"/api/v1/push/{token}"


async def test_critical_is_part_of_the_definition(pool, clean):
    """Stored in the spec (the check.due events carry it), read back as a top-level field:
    applying the same files again changes nothing, a change of it is an update."""
    await store.apply(pool, SCHEMA.parse([tcp("a", critical=True), tcp("b")]), prune=False,
                      dry_run=False, keyring=NO_KEY)
    specs = {r["id"]: json.loads(r["spec"]) for r in await store.plan_rows(pool, ["a", "b"])}
    assert specs == {"a": {"host": "127.0.0.1", "port": 9, "critical": True},
                     "b": {"host": "127.0.0.1", "port": 9}}
    a, b = [store.definition(await store.get(pool, mid)) for mid in ("a", "b")]
    assert (a["critical"], a["tcp"], "critical" in b) == (True, {"host": "127.0.0.1",
                                                                 "port": 9}, False)
    again = await store.apply(pool, SCHEMA.parse([tcp("a", critical=True), tcp("b")]),
                              prune=False, dry_run=True, keyring=NO_KEY)
    assert (again.lines(), again.unchanged) == ([], 2)
    flipped = await store.apply(pool, SCHEMA.parse([tcp("a"), tcp("b", critical=True)]),
                                prune=False, dry_run=False, keyring=NO_KEY)
    assert flipped.lines() == ["~ update a (critical)", "~ update b (critical)"]
