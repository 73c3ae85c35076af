"""`vigil maintenance list|show|delete`: the maintenance windows in Postgres. Windows are
made through the API or in the files `vigil monitors apply` reads (a `maintenance:` list)."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

import asyncpg
import yaml
from pydantic import ValidationError

from api.maintenance import shown
from engine import maintenance_store
from engine.maintenance import Window
from vigil.admin import CommandError


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                common: argparse.ArgumentParser) -> None:
    windows = sub.add_parser("maintenance", help="maintenance windows")
    actions = windows.add_subparsers(dest="action", required=True)
    actions.add_parser("list", parents=[common], help="every window and whether it is on now")
    for action, text in (("show", "one window and its next stretches"),
                         ("delete", "delete one window")):
        actions.add_parser(action, parents=[common], help=text).add_argument("id")


def _schedule(window: Window) -> str:
    if window.start is not None and window.end is not None:
        return f"{window.start.isoformat()} to {window.end.isoformat()}"
    rule = window.cron or " ".join((window.rrule or "").split())
    return f"{rule} for {(window.duration_ms or 0) / 60_000:g} min ({window.timezone})"


async def list_windows(pool: asyncpg.Pool) -> None:
    now = int(time.time() * 1000)
    print(f"{'ID':32} {'MODE':5} {'SOURCE':6} {'NOW':27} SCHEDULE")
    for row in await maintenance_store.list_all(pool):
        try:
            window = maintenance_store.window_of(row)
        except ValidationError:
            print(f"{row['id']:32} {'-':5} {row['source']:6} {'invalid (skipped)':27} "
                  f"see vigil maintenance show {row['id']}")
            continue
        until = window.active(now)
        state = "-" if until is None else (
            f"on until {datetime.fromtimestamp(until / 1000, UTC):%Y-%m-%d %H:%M}Z")
        print(f"{window.id:32} {window.mode:5} {row['source']:6} {state:27} "
              f"{_schedule(window)}")


async def show(pool: asyncpg.Pool, window_id: str) -> None:
    row = await maintenance_store.get(pool, window_id)
    if row is None:
        raise CommandError(f"no maintenance window {window_id!r}")
    print(yaml.safe_dump(shown(row, int(time.time() * 1000)), sort_keys=False).rstrip())


async def delete(pool: asyncpg.Pool, window_id: str) -> None:
    if not await maintenance_store.delete(pool, window_id):
        raise CommandError(f"no maintenance window {window_id!r}")
    print(f"maintenance window {window_id}: deleted")


async def run(pool: asyncpg.Pool, args: argparse.Namespace) -> None:
    if args.action == "list":
        await list_windows(pool)
    elif args.action == "show":
        await show(pool, args.id)
    else:
        await delete(pool, args.id)
