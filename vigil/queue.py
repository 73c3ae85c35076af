"""`vigil queue stats|health|dead-letters|pause|resume`: the operations API's view and actions
from a shell, straight on Redis (engine.queue), so they work with the API down; next to a
running `vigil up` they find its Redis through the data directory, as every command does.
`health` exits 1 when the queue is not healthy, for a cron job or a probe."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, datetime

import orjson
import redis.asyncio as aioredis

from engine import queue
from engine.connections import redis_client
from engine.keys import Keys
from engine.settings import Settings
from engine.shards import Layout
from engine.streams import DeadLetters
from vigil.admin import CommandError

PAYLOAD_SHOWN = 120


def _dead_letter_id(text: str) -> str:
    try:
        return queue.dead_letter_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _page_size(text: str) -> int:
    try:
        return queue.page_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parsers(sub: argparse._SubParsersAction,  # type: ignore[type-arg]
                common: argparse.ArgumentParser) -> None:
    top = sub.add_parser("queue", help="streams, groups, executors, dead letters, pausing "
                                       "dispatch (straight on Redis)")
    qsub = top.add_subparsers(dest="action", required=True)
    for action, text in (("stats", "every stream and group, the executors by region, what is "
                                   "paused"),
                         ("health", "whether every role keeps up; exit 1 with the reasons "
                                    "when not")):
        qsub.add_parser(action, parents=[common], help=text).add_argument(
            "--json", action="store_true", help="as the API answers")
    dead = qsub.add_parser("dead-letters", help="entries that could not be processed")
    dsub = dead.add_subparsers(dest="dead_action", required=True)
    listing = dsub.add_parser("list", parents=[common], help="oldest first, with the reason "
                                                              "and the entry's event")
    listing.add_argument("--limit", type=_page_size, default=50, metavar=f"1-{queue.PAGE_MAX}")
    listing.add_argument("--after", type=_dead_letter_id, metavar="ID",
                         help="the page after this dead letter")
    retry = dsub.add_parser("retry", parents=[common],
                            help="put a dead letter (or --all) back on its stream")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", type=_dead_letter_id)
    which.add_argument("--all", action="store_true")
    purge = dsub.add_parser("purge", parents=[common], help="delete every dead letter, or one")
    purge.add_argument("id", nargs="?", type=_dead_letter_id)
    for parser in (listing, retry, purge):
        parser.add_argument("--shard", default="0", metavar="N",
                            help="the shard whose dead letters (each keeps its own; default 0)")
    # --region (a connection option every command takes) names the region; none: all.
    for action, text in (("pause", "stop dispatching checks to --region (default: every "
                                   "region); their slots pass, counted held"),
                         ("resume", "dispatch to --region again from its next slot (default: "
                                    "every pause goes)")):
        qsub.add_parser(action, parents=[common], help=text)


def _age(ms: int | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.1f}s"


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _paused(paused: dict[str, int]) -> str:
    if not paused:
        return "dispatch: running"
    return "dispatch paused: " + ", ".join(
        f"{'every region' if region == queue.ALL_REGIONS else region} since {_time(since)}Z"
        for region, since in paused.items())


def print_stats(stats: queue.QueueStats) -> None:
    print(f"{'STREAM':24} {'LENGTH':>8} {'OLDEST':>9}")
    for stream in stats.streams:
        print(f"{stream.name:24} {stream.length:>8} {_age(stream.oldest_age_ms):>9}")
    print(f"\n{'STREAM':24} {'GROUP':12} {'ROLE':18} {'PENDING':>7} {'LAG':>7} "
          f"{'UNREAD AGE':>10}  CONSUMERS (pending, idle)")
    for stream in stats.streams:
        for g in stream.groups:
            consumers = ", ".join(f"{c.name} ({c.pending}, {_age(c.idle_ms)})"
                                  for c in g.consumers) or "-"
            lag = "?" if g.lag is None else str(g.lag)
            print(f"{stream.name:24} {g.name:12} {g.role or '-':18} {g.pending:>7} {lag:>7} "
                  f"{_age(g.oldest_unread_age_ms):>10}  {consumers}")
    print(f"\n{'REGION':16} {'EXECUTOR':32} {'ALIVE':5} {'HEARTBEAT':>9} {'IN FLIGHT':>9}")
    for region, executors in stats.executors.items():
        for e in executors:
            busy = "-" if e.in_flight is None else f"{e.in_flight}/{e.concurrency}"
            print(f"{region:16} {e.instance:32} {'yes' if e.alive else 'no':5} "
                  f"{_age(e.heartbeat_age_ms):>9} {busy:>9}")
    counters = ", ".join(f"{k} {v}" for k, v in stats.dispatch.items()) or "none yet"
    print(f"\n{_paused(stats.paused)}\nscheduler counters: {counters}\n"
          f"dead letters: {stats.dead_letters}")


async def health(r: aioredis.Redis, keys: Sequence[Keys], as_json: bool) -> None:
    report = queue.health_of(await queue.stats(r, keys))
    if as_json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        for role in report.roles:
            state = "keeps up" if role.keeping_up else "BEHIND"
            print(f"{role.role:18} {role.stream:24} {state:8} oldest unread "
                  f"{_age(role.oldest_unread_age_ms)}")
        print(_paused(report.paused))
        for problem in report.problems:
            print(f"problem: {problem}")
    if not report.healthy:
        raise CommandError(f"the queue is not healthy: {len(report.problems)} problem(s)")
    if not as_json:
        print("healthy")


async def dead_letters(dead: DeadLetters, args: argparse.Namespace) -> None:
    if args.dead_action == "list":
        page = await dead.page(args.limit, args.after)
        print(f"{len(page)} of {await dead.count()} dead letters")
        for d in page:
            payload = d.payload if len(d.payload) <= PAYLOAD_SHOWN else (
                f"{d.payload[:PAYLOAD_SHOWN]}... ({len(d.payload)} characters)")
            print(f"\n{d.id}  from {d.stream} {d.entry_id} at {_time(d.at_ms)}Z\n"
                  f"  reason: {d.reason}\n  payload: {payload}")
        if len(page) == args.limit:
            print(f"\nnext page: --after {page[-1].id}")
    elif args.dead_action == "retry":
        done = await (dead.retry_all() if args.all else dead.retry(args.id))
        if not (done or args.all):
            raise CommandError(f"no dead letter {args.id}")
        print(f"{done} dead letter(s) put back on their stream")
    elif args.id is None:
        print(f"{await dead.purge_all()} dead letter(s) purged")
    elif await dead.purge(args.id):
        print(f"dead letter {args.id} purged")
    else:
        raise CommandError(f"no dead letter {args.id}")


async def _run(r: aioredis.Redis, shards: Layout, args: argparse.Namespace) -> None:
    keys = shards.all
    if args.action == "stats":
        stats = await queue.stats(r, keys)
        if args.json:
            print(orjson.dumps(stats, option=orjson.OPT_INDENT_2).decode())
        else:
            print_stats(stats)
    elif args.action == "health":
        await health(r, keys, args.json)
    elif args.action == "dead-letters":
        if args.shard not in {k.shard for k in keys}:
            raise CommandError(f"--shard {args.shard}: the shards are 0 to {len(keys) - 1} "
                               "(VIGIL_SHARDS)")
        await dead_letters(DeadLetters(r, Keys(args.shard).deadletter), args)
    else:
        act = queue.pause if args.action == "pause" else queue.resume
        print(_paused(await act(r, keys, args.region)))


async def run(settings: Settings, args: argparse.Namespace) -> None:
    r = redis_client(settings.redis_url)
    try:
        await _run(r, Layout.of(settings.shards, settings.served), args)
    finally:
        await r.aclose()
