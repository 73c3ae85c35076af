"""`vigil incidents list|show|ack|note` and `vigil confirmed [MONITOR]`: the incidents API's
reads and writes and the confirmed status from a shell, straight on Postgres
(engine.incidents). Who acknowledges or writes a note is `--by`, the OS user by default:
whoever runs this holds Vigil's database credentials already."""

from __future__ import annotations

import argparse
import getpass
from datetime import UTC, datetime

import asyncpg
import yaml

from engine import incidents
from vigil.admin import CommandError


def add_parsers(sub: argparse._SubParsersAction,  # type: ignore[type-arg]
                common: argparse.ArgumentParser) -> None:
    top = sub.add_parser("incidents", help="incidents: list, show, acknowledge, add a note")
    isub = top.add_subparsers(dest="action", required=True)
    listing = isub.add_parser("list", parents=[common], help="incidents, newest first")
    state = listing.add_mutually_exclusive_group()
    state.add_argument("--open", dest="state", action="store_const", const="open")
    state.add_argument("--resolved", dest="state", action="store_const", const="resolved")
    listing.add_argument("--monitor", help="one monitor's only")
    listing.add_argument("--since", help="opened this long ago or later (24h), or since an "
                                         "ISO 8601 time")
    listing.add_argument("--limit", type=int, default=50)
    isub.add_parser("show", parents=[common], help="one incident and its notes").add_argument(
        "id", help="monitor id:opened at ms")
    ack = isub.add_parser("ack", parents=[common], help="acknowledge an incident")
    note = isub.add_parser("note", parents=[common], help="add a note to an incident")
    for p in (ack, note):
        p.add_argument("id", help="monitor id:opened at ms")
    note.add_argument("text")
    for p in (ack, note):
        p.add_argument("--by", default=getpass.getuser(), help="who (default: the OS user)")
    sub.add_parser("confirmed", parents=[common],
                   help="the confirmed status of every monitor (or one), and of its regions"
                   ).add_argument("monitor", nargs="?")


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


async def run(pool: asyncpg.Pool, args: argparse.Namespace) -> None:
    if args.command == "confirmed":
        await confirmed(pool, args.monitor)
    elif args.action == "list":
        await list_incidents(pool, args)
    elif args.action == "show":
        await show(pool, args.id)
    elif args.action == "ack":
        if not await incidents.acknowledge(pool, args.id, args.by):
            raise CommandError(f"no incident {args.id!r}")
        print(f"{args.id}: acknowledged")
    else:
        if not args.text.strip() or len(args.text) > incidents.NOTE_MAX or "\x00" in args.text:
            raise CommandError(f"note: expected text of 1 to {incidents.NOTE_MAX} characters")
        if not await incidents.add_note(pool, args.id, args.by, args.text):
            raise CommandError(f"no incident {args.id!r}")
        print(f"{args.id}: note added")


async def list_incidents(pool: asyncpg.Pool, args: argparse.Namespace) -> None:
    if not 1 <= args.limit <= incidents.LIST_MAX:
        raise CommandError(f"--limit: expected 1 to {incidents.LIST_MAX}")
    try:
        since = None if args.since is None else incidents.since_ms(args.since)
    except ValueError as exc:
        raise CommandError(f"--since: {exc}") from None
    found = await incidents.listed(pool, state=args.state, monitor_id=args.monitor,
                                   since_ms=since, limit=args.limit)
    print(f"{'ID':40} {'OPENED (UTC)':19}  {'RESOLVED (UTC)':19}  {'DURATION':>9}  ACK")
    for i in found:
        duration = "-" if i["duration_ms"] is None else f"{i['duration_ms'] / 1000:g}s"
        print(f"{i['id']:40} {_time(i['opened_ms']):19}  {_time(i['resolved_ms']):19}  "
              f"{duration:>9}  {i['acknowledged_by'] or '-'}")


async def show(pool: asyncpg.Pool, incident_id: str) -> None:
    found = await incidents.one(pool, incident_id)
    if found is None:
        raise CommandError(f"no incident {incident_id!r}")
    print(yaml.safe_dump(found, sort_keys=False).rstrip())


async def confirmed(pool: asyncpg.Pool, monitor_id: str | None) -> None:
    """Region `*` is the monitor's own status, over its regions."""
    print(f"{'MONITOR':32} {'REGION':12} {'STATUS':9} {'SINCE (UTC)':19}  PREVIOUS")
    for row in await incidents.confirmed(pool, monitor_id):
        print(f"{row['monitor_id']:32} {row['region']:12} {row['status']:9} "
              f"{_time(row['since_ms']):19}  {row['previous'] or '-'}")
