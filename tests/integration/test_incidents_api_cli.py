"""`vigil incidents list|show|ack|note` and `vigil confirmed` on the session's Postgres, on
what the real sink made of published events; the arguments parsed by the real `vigil`
parser."""

from __future__ import annotations

import time

import pytest
import yaml

from engine.settings import Settings
from sinks.incidents import IncidentsSink
from tests.support.events import (
    change,
    clear_projections,
    opened,
    publish,
    resolved,
    run_until_done,
)
from vigil import cli
from vigil import incidents as commands
from vigil.admin import CommandError

HOUR = 3_600_000
NOW = int(time.time()) * 1000
OPEN, OLD = f"web:{NOW - HOUR}", f"db:{NOW - 30 * HOUR}"


@pytest.fixture
async def seeded(r, keys, pool, ch, postgres_dsn) -> None:
    await clear_projections(pool, ch)
    await publish(r, keys, [opened("db", NOW - 30 * HOUR),
                            resolved("db", NOW - 30 * HOUR, NOW - 29 * HOUR),
                            change("web", NOW - HOUR, "down", "up", region="eu"),
                            change("web", NOW - HOUR, "down", "up"),
                            opened("web", NOW - HOUR, error_kind="status", error="HTTP 503")])
    settings = Settings(sink_flush_ms=50, instance_id="projection-cli")
    await run_until_done(IncidentsSink(r, keys, settings, postgres_dsn=postgres_dsn), r)


async def vigil(pool, *argv: str) -> None:
    await commands.run(pool, cli.parser().parse_args(argv))


async def test_list_show_ack_note(pool, seeded, capsys):
    await vigil(pool, "incidents", "list")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == [OPEN, OLD]
    assert lines[2].split()[-2:] == ["3600s", "-"]
    await vigil(pool, "incidents", "list", "--open", "--since", "2h")
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == [OPEN]
    await vigil(pool, "incidents", "ack", OPEN, "--by", "alice")
    await vigil(pool, "incidents", "note", OPEN, "restarted the pool", "--by", "bob")
    assert capsys.readouterr().out.splitlines() == [f"{OPEN}: acknowledged", f"{OPEN}: note added"]
    await vigil(pool, "incidents", "show", OPEN)
    shown = yaml.safe_load(capsys.readouterr().out)
    assert (shown["acknowledged_by"], shown["error"]) == ("alice", "HTTP 503")
    assert [(n["author"], n["text"]) for n in shown["notes"]] == [("bob", "restarted the pool")]


@pytest.mark.parametrize(("argv", "message"), [
    (["show", "web:1"], "no incident 'web:1'"), (["ack", "web:1"], "no incident 'web:1'"),
    (["note", "web:1", "x"], "no incident 'web:1'"), (["note", OPEN, " "], "note: expected"),
    (["list", "--since", "last week"], "--since: expected a duration"),
    (["list", "--limit", "0"], "--limit: expected 1 to 1000")])
async def test_errors_name_what_is_wrong(pool, seeded, argv, message):
    with pytest.raises(CommandError, match=message):
        await vigil(pool, "incidents", *argv)
    assert await pool.fetchval("SELECT count(*) FROM incident_notes") == 0


async def test_confirmed(pool, seeded, capsys):
    await vigil(pool, "confirmed")
    everything = capsys.readouterr().out.splitlines()
    await vigil(pool, "confirmed", "web")
    assert capsys.readouterr().out.splitlines() == everything
    assert [line.split()[:3] + line.split()[-1:] for line in everything[1:]] == [
        ["web", "*", "down", "up"], ["web", "eu", "down", "up"]]
