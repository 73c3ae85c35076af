"""Maintenance windows in the files `vigil monitors apply` reads (a `maintenance:` list next to
`monitors:`), and `vigil maintenance list|show|delete`, on real Postgres: create, update,
unchanged, prune of file windows only, every problem named before anything is written."""

from __future__ import annotations

import json

import asyncpg
import pytest

from engine import maintenance_store
from engine.maintenance import Window
from engine.monitors import SpecError
from vigil import admin
from vigil import maintenance as commands
from vigil.cli import parser

MONITOR = {"id": "pg", "kind": "tcp", "tags": ["db"], "tcp": {"host": "127.0.0.1", "port": 9}}
NIGHTLY = {"id": "nightly", "tags": ["db"], "cron": "30 2 * * *", "duration": "2h",
           "timezone": "Europe/Berlin"}
MOVE = {"id": "move", "monitors": ["pg"], "mode": "pause", "start": "2026-05-01T22:00:00+02:00",
        "end": "2026-05-02T01:00:00+02:00"}


@pytest.fixture
async def windows(pool, clean):
    await pool.execute("TRUNCATE maintenance_windows")


async def stored(pool) -> dict[str, tuple[str, int]]:
    return {r["id"]: (r["source"], r["version"])
            for r in await pool.fetch("SELECT id, source, version FROM maintenance_windows")}


async def test_apply_creates_updates_and_prunes_file_windows(tmp_path, pool, windows, capsys):
    file = tmp_path / "db.yaml"
    file.write_text(json.dumps({"monitors": [MONITOR], "maintenance": [NIGHTLY, MOVE]}))
    await maintenance_store.upsert(pool, Window.model_validate({**NIGHTLY, "id": "by-api"}),
                                   "api")
    await admin.apply(pool, str(file), prune=True, dry_run=False)
    out = capsys.readouterr().out
    assert "+ create maintenance move" in out
    assert "+ create maintenance nightly" in out
    assert f"{file}: maintenance windows: 2 created, 0 updated, 0 unchanged, 0 deleted" in out
    assert await stored(pool) == {"nightly": ("file", 1), "move": ("file", 1),
                                  "by-api": ("api", 1)}

    await admin.apply(pool, str(file), prune=True, dry_run=False)
    assert "0 created, 0 updated, 2 unchanged, 0 deleted" in capsys.readouterr().out
    assert await stored(pool) == {"nightly": ("file", 1), "move": ("file", 1),
                                  "by-api": ("api", 1)}

    file.write_text(json.dumps({"monitors": [MONITOR],
                                "maintenance": [{**NIGHTLY, "mode": "pause"}]}))
    await admin.apply(pool, str(file), prune=False, dry_run=True)
    out = capsys.readouterr().out
    assert "~ update maintenance nightly" in out
    assert "dry run, nothing written: maintenance windows: 0 created, 1 updated" in out
    assert (await stored(pool))["nightly"] == ("file", 1)
    await admin.apply(pool, str(file), prune=True, dry_run=False)
    assert "- delete maintenance move" in capsys.readouterr().out
    # The API's window is never pruned by files.
    assert await stored(pool) == {"nightly": ("file", 2), "by-api": ("api", 1)}


async def test_a_file_may_hold_only_windows(tmp_path, pool, windows):
    (tmp_path / "windows.yml").write_text(json.dumps({"maintenance": [MOVE]}))
    await admin.apply(pool, str(tmp_path), prune=False, dry_run=False)
    assert await stored(pool) == {"move": ("file", 1)}
    assert await pool.fetchval("SELECT count(*) FROM monitors") == 0


async def test_every_problem_is_named_and_nothing_is_written(tmp_path, pool, windows):
    (tmp_path / "a.yaml").write_text(json.dumps({
        "monitors": [{**MONITOR, "interval": "soon"}],
        "maintenance": [{**NIGHTLY, "timezone": "Europe/Nowhere"}, {**MOVE, "end": None}]}))
    (tmp_path / "b.yaml").write_text(json.dumps({"maintenance": [NIGHTLY, {"id": "x"}]}))
    with pytest.raises(SpecError) as caught:
        await admin.apply(pool, str(tmp_path), prune=True, dry_run=False)
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    problems = caught.value.problems
    assert problems[0].startswith(f"monitor 'pg' ({a}: monitors[0]): interval:")
    assert problems[1:] == [
        f"maintenance 'nightly' ({a}: maintenance[0]): timezone: 'Europe/Nowhere' is not an "
        "IANA time zone",
        f"maintenance 'move' ({a}: maintenance[1]): end: a one-off window needs start and "
        "end; a recurring one rrule or cron, duration and timezone",
        f"maintenance 'x' ({b}: maintenance[1]): monitors: name the monitors (ids) or tags the "
        "window covers",
    ]
    assert await stored(pool) == {}
    assert await pool.fetchval("SELECT count(*) FROM monitors") == 0


async def test_a_window_id_twice_across_files_is_refused(tmp_path, pool, windows):
    (tmp_path / "a.yaml").write_text(json.dumps({"maintenance": [MOVE]}))
    (tmp_path / "b.yaml").write_text(json.dumps({"maintenance": [MOVE]}))
    with pytest.raises(SpecError) as caught:
        await admin.apply(pool, str(tmp_path), prune=False, dry_run=False)
    assert caught.value.problems == [f"maintenance 'move' ({tmp_path / 'b.yaml'}: "
                                     f"maintenance[0]): id: also defined in {tmp_path / 'a.yaml'}"]


async def test_the_maintenance_commands(pool, windows, capsys):
    await maintenance_store.upsert(pool, Window.model_validate(NIGHTLY), "api")
    await maintenance_store.upsert(pool, Window.model_validate(MOVE), "file")
    await commands.run(pool, parser().parse_args(["maintenance", "list"]))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "MODE", "SOURCE", "NOW", "SCHEDULE"]
    assert lines[1].split()[:4] == ["move", "pause", "file", "-"]
    assert lines[2].split()[:3] == ["nightly", "mute", "api"]
    assert lines[2].endswith("30 2 * * * for 120 min (Europe/Berlin)")
    await commands.run(pool, parser().parse_args(["maintenance", "show", "nightly"]))
    out = capsys.readouterr().out
    assert "cron: 30 2 * * *" in out
    assert "next:" in out
    await commands.run(pool, parser().parse_args(["maintenance", "delete", "nightly"]))
    assert capsys.readouterr().out == "maintenance window nightly: deleted\n"
    for action in ("show", "delete"):
        with pytest.raises(admin.CommandError, match="no maintenance window 'nightly'"):
            await commands.run(pool, parser().parse_args(["maintenance", action, "nightly"]))
    assert await stored(pool) == {"move": ("file", 1)}


async def test_monitors_and_windows_are_written_together_or_not_at_all(tmp_path, pool,
                                                                       windows):
    """The windows' write fails (here a trigger refuses it; in life the database goes away
    between the two): the monitors written before it in the same apply are not kept."""
    file = tmp_path / "db.yaml"
    file.write_text(json.dumps({"monitors": [MONITOR], "maintenance": [NIGHTLY]}))
    await pool.execute("""
        CREATE FUNCTION refuse_window() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'refused'; END $$;
        CREATE TRIGGER refuse_window BEFORE INSERT ON maintenance_windows
            FOR EACH ROW EXECUTE FUNCTION refuse_window();""")
    try:
        with pytest.raises(asyncpg.RaiseError):
            await admin.apply(pool, str(file), prune=False, dry_run=False)
    finally:
        await pool.execute("DROP TRIGGER refuse_window ON maintenance_windows; "
                           "DROP FUNCTION refuse_window()")
    assert await pool.fetchval("SELECT count(*) FROM monitors") == 0
    assert await stored(pool) == {}
