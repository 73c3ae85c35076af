"""The `vigil` command line."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import structlog
import uvloop

from api.tokens import SCOPES, expiry_ms
from engine import channels
from engine import logging as vlogging
from engine.clickhouse import ClickHouse
from engine.connections import postgres_pool
from engine.keys import Keys
from engine.migrate import MigrationError, migrate, script_for
from engine.monitors import SpecError
from engine.secrets import KEY_VARIABLE, SecretError, generate_key
from engine.service import OUTAGES
from engine.settings import Settings, SettingsError
from notifier import commands as notify_commands
from notifier.settings import NotifySettings
from notifier.transports import TransportError
from vigil import admin
from vigil import incidents as incident_commands
from vigil import maintenance as maintenance_commands
from vigil import queue as queue_commands
from vigil import report as report_command
from vigil.admin import CommandError
from vigil.embedded import Embedded, EmbeddedError, servers_of
from vigil.replay import replay
from vigil.roles import ROLES, run_roles

log = structlog.get_logger(component="cli")
# Allocations between collections of the young generation (CPython: 700).
GC_THRESHOLD = 20_000
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "monitors.yaml"
DATA_DIR = ".vigil"
# The example monitors probe Vigil's own API: at the port this `vigil up` serves.
EXAMPLE_API = "http://127.0.0.1:8080/"


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    defaults = Settings()  # the help states the defaults the settings have, not copies of them
    g = p.add_argument_group("connections (override VIGIL_* variables)")
    g.add_argument("--redis-url", help="VIGIL_REDIS_URL: redis://, rediss:// or unix://")
    g.add_argument("--postgres-dsn", help="VIGIL_POSTGRES_DSN: postgresql://...")
    g.add_argument("--clickhouse-url", help="VIGIL_CLICKHOUSE_URL: http(s)://... or chdb:///path")
    g.add_argument("--region", help=f"VIGIL_REGION (default: {defaults.region})")
    g.add_argument("--concurrency", type=int,
                   help=f"VIGIL_CONCURRENCY: checks at once ({defaults.concurrency})")
    g.add_argument("--instance-id", help="VIGIL_INSTANCE_ID (default: host-pid)")
    g.add_argument("--log-format", choices=("console", "json"), help="VIGIL_LOG_FORMAT")
    g.add_argument("--metrics-port", type=int, help="VIGIL_METRICS_PORT: serve /metrics (0: off)")
    g.add_argument("--metrics-host",
                   help=f"VIGIL_METRICS_HOST: its address ({defaults.metrics_host})")
    g.add_argument("--data-dir", default=DATA_DIR,
                   help="vigil up's data directory; every other command finds the servers of "
                        "a vigil up running there (default: %(default)s)")
    return p


def _token_name(p: argparse.ArgumentParser) -> None:
    # `--name` is how earlier versions took it; scripts written then keep working.
    name = p.add_mutually_exclusive_group(required=True)
    name.add_argument("name", nargs="?", help="the token's name")
    name.add_argument("--name", dest="name_option", metavar="NAME", help=argparse.SUPPRESS)


def _expiry(text: str) -> int:
    try:
        return expiry_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    common = _common()
    top = argparse.ArgumentParser(prog="vigil", description="Event-sourced uptime monitoring.")
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("scheduler", parents=[common], help="dispatch due checks")
    sub.add_parser("executor", parents=[common], help="run checks")
    sub.add_parser("evaluator", parents=[common],
                   help="turn results into confirmed status, incidents and events")
    sink = sub.add_parser("sink", parents=[common], help="write results")
    sink.add_argument("target", choices=("clickhouse", "status", "incidents", "status-events"))
    for name, helptext in (("api", "serve the HTTP API and status page"),
                           ("run", "run several roles in one process")):
        p = sub.add_parser(name, parents=[common], help=helptext)
        if name == "run":
            p.add_argument("roles", nargs="+", metavar="ROLE", choices=ROLES,
                           help=", ".join(ROLES))
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8080)
    sub.add_parser("migrate", parents=[common], help="apply database migrations").add_argument(
        "--print-sql", action="store_true",
        help="print the ClickHouse DDL migrate runs (ON CLUSTER with VIGIL_CLICKHOUSE_CLUSTER) "
             "and exit, changing nothing")
    monitors = sub.add_parser("monitors", help="manage monitors (config as code)")
    msub = monitors.add_subparsers(dest="action", required=True)
    apply = msub.add_parser("apply", parents=[common],
                            help="make Postgres match YAML files (declarative)")
    apply.add_argument("-f", "--file", required=True, help="a YAML file or a directory of them")
    apply.add_argument("--dry-run", action="store_true", help="print the diff, write nothing")
    apply.add_argument("--prune", action="store_true",
                       help="delete file-managed monitors that are not in the files")
    listing = msub.add_parser("list", parents=[common], help="every monitor and its status")
    listing.add_argument("--tag")
    for action in ("show", "pause", "resume", "delete"):
        msub.add_parser(action, parents=[common], help=f"{action} one monitor").add_argument("id")
    tokens = sub.add_parser("tokens", help="API tokens")
    tsub = tokens.add_subparsers(dest="action", required=True)
    create = tsub.add_parser("create", parents=[common], help="print a new token")
    _token_name(create)
    create.add_argument("--scope", choices=SCOPES, default="read",
                        help="read: definitions and status details; write: also change "
                             "monitors; admin: everything (default: read)")
    create.add_argument("--expires", type=_expiry, metavar="DURATION",
                        help="refuse the token after this long, like 30d (default: never)")
    tsub.add_parser("list", parents=[common], help="tokens, their scope and when they were used")
    _token_name(tsub.add_parser("revoke", parents=[common], help="revoke a token"))
    secrets = sub.add_parser("secrets", help="the key that seals monitors' secrets")
    ssub = secrets.add_subparsers(dest="action", required=True)
    ssub.add_parser("keygen", help="print a new key for VIGIL_SECRET_KEY")
    ssub.add_parser("rotate", parents=[common],
                    help="re-seal every stored secret with the first key of VIGIL_SECRET_KEY")
    sub.add_parser("notifier", parents=[common], help="send notifications (the outbox)")
    chans = sub.add_parser("channels", help="notification channels (change them with the API)")
    csub = chans.add_subparsers(dest="action", required=True)
    csub.add_parser("list", parents=[common], help="every channel, its secrets redacted")
    csub.add_parser("show", parents=[common], help="one channel, its secrets redacted"
                    ).add_argument("id")
    outbox = sub.add_parser("deliveries", parents=[common],
                            help="the notification outbox, newest first")
    outbox.add_argument("--state", choices=channels.STATES, help="dead: given up after the "
                                                                  "last attempt")
    outbox.add_argument("--channel")
    outbox.add_argument("--limit", type=int, default=50)
    notify = sub.add_parser("notify", help="notifications")
    notify.add_subparsers(dest="action", required=True).add_parser(
        "test", parents=[common], help="send a test message to a channel now").add_argument(
        "channel")
    incident_commands.add_parsers(sub, common)
    rebuild = sub.add_parser("replay", parents=[common], help="rebuild incidents and confirmed "
                             "status in Postgres from the results in ClickHouse")
    rebuild.add_argument("--yes", action="store_true", help="empty those tables first "
                         "(their acknowledgements and notes are lost)")
    maintenance_commands.add_parsers(sub, common)
    report_command.add_parser(sub, common)
    queue_commands.add_parsers(sub, common)
    up = sub.add_parser("up", parents=[common], help="everything in one process, embedded")
    up.add_argument("--port", type=int, default=8080)
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--examples", default=str(EXAMPLES),
                    help="monitors file loaded at start if it exists ('' for none)")
    return top


# What a command takes from a `vigil up` running on its data directory, where neither the
# flag nor the variable says otherwise. Not ClickHouse: chDB admits one process per path.
FROM_UP = (("redis_url", "VIGIL_REDIS_URL"), ("postgres_dsn", "VIGIL_POSTGRES_DSN"))


def _beside_up(args: argparse.Namespace) -> None:
    """Next to a running `vigil up` (same --data-dir, default ./.vigil), a command reaches
    its Redis and Postgres and opens secrets with its key, with nothing set by hand."""
    if args.command == "up":
        return
    data_dir = Path(args.data_dir)
    servers = servers_of(data_dir)
    for name, variable in FROM_UP:
        if getattr(args, name, None) is None and variable not in os.environ and name in servers:
            setattr(args, name, servers[name])
    key = data_dir / "secret.key"
    if servers and key.is_file() and not (os.environ.get(KEY_VARIABLE)
                                          or os.environ.get(f"{KEY_VARIABLE}_FILE")):
        os.environ[f"{KEY_VARIABLE}_FILE"] = str(key)


def settings_from(args: argparse.Namespace) -> Settings:
    _beside_up(args)
    return Settings.from_env(
        redis_url=args.redis_url, postgres_dsn=args.postgres_dsn,
        clickhouse_url=args.clickhouse_url, region=args.region, concurrency=args.concurrency,
        instance_id=args.instance_id, log_format=args.log_format, metrics_port=args.metrics_port,
        metrics_host=args.metrics_host)


async def cmd_migrate(settings: Settings) -> None:
    ch = ClickHouse.from_url(settings.clickhouse_url)
    try:
        applied = await migrate(settings.postgres_dsn, ch, settings.clickhouse_cluster)
    finally:
        await ch.close()
    log.info("migrations done", applied=applied)


async def cmd_print_sql(settings: Settings) -> None:
    ch = ClickHouse.from_url(settings.clickhouse_url)
    try:
        print(await script_for(ch, settings.clickhouse_cluster), end="")
    finally:
        await ch.close()


async def cmd_keygen() -> None:
    # Nothing to connect to: a key is made here and only ever lives in the operator's config.
    print(generate_key())


async def cmd_admin(settings: Settings, args: argparse.Namespace) -> None:
    pool = await postgres_pool(settings.postgres_dsn)
    try:
        await _admin(pool, settings, args)
    finally:
        await pool.close()


async def _admin(pool: asyncpg.Pool, settings: Settings, args: argparse.Namespace) -> None:
    action = (args.command, args.action)
    if action == ("monitors", "apply"):
        await admin.apply(pool, args.file, prune=args.prune, dry_run=args.dry_run,
                          served_by=(settings.redis_url, Keys(settings.served[0])))
    elif action == ("monitors", "list"):
        await admin.list_monitors(pool, args.tag)
    elif action == ("monitors", "show"):
        await admin.show(pool, args.id)
    elif action in (("monitors", "pause"), ("monitors", "resume")):
        await admin.set_enabled(pool, args.id, enabled=args.action == "resume")
    elif action == ("monitors", "delete"):
        await admin.delete(pool, args.id)
    elif action == ("tokens", "create"):
        await admin.token_create(pool, args.name or args.name_option, args.scope, args.expires)
    elif action == ("secrets", "rotate"):
        await admin.secrets_rotate(pool)
    elif args.command == "maintenance":
        await maintenance_commands.run(pool, args)
    elif action == ("tokens", "list"):
        await admin.token_list(pool)
    else:
        await admin.token_revoke(pool, args.name or args.name_option)


async def cmd_notify(settings: Settings, args: argparse.Namespace) -> None:
    pool = await postgres_pool(settings.postgres_dsn)
    try:
        if (args.command, getattr(args, "action", None)) == ("channels", "list"):
            await notify_commands.list_channels(pool)
        elif args.command == "channels":
            await notify_commands.show_channel(pool, args.id)
        elif args.command == "deliveries":
            await notify_commands.list_deliveries(pool, args.state, args.channel, args.limit)
        else:
            try:
                print(await notify_commands.send_test(pool, args.channel,
                                                      NotifySettings.from_env().timeout_ms,
                                                      settings))
            except (notify_commands.NotFound, TransportError, SecretError) as exc:
                raise CommandError(f"notify test {args.channel}: {exc}") from None
    except notify_commands.NotFound as exc:
        raise CommandError(str(exc)) from None
    finally:
        await pool.close()


async def cmd_incidents(settings: Settings, args: argparse.Namespace) -> None:
    pool = await postgres_pool(settings.postgres_dsn)
    try:
        await incident_commands.run(pool, args)
    finally:
        await pool.close()


async def cmd_replay(settings: Settings, truncate: bool) -> None:
    pool = await postgres_pool(settings.postgres_dsn)
    ch = ClickHouse.from_url(settings.clickhouse_url)
    try:
        evaluated, events = await replay(pool, ch, truncate)
    finally:
        await ch.close()
        await pool.close()
    print(f"replayed {evaluated} results into {events} events")


async def cmd_up(args: argparse.Namespace, examples: str | None) -> None:
    embedded = Embedded(Path(args.data_dir))
    redis_url, dsn, ch_url = await embedded.start(args.redis_url, args.postgres_dsn,
                                                  args.clickhouse_url)
    try:
        if not (os.environ.get(KEY_VARIABLE) or os.environ.get(f"{KEY_VARIABLE}_FILE")):
            # Every role of this process reads the key as a distributed one would: from the
            # environment (engine.secrets.Keyring.from_env).
            os.environ[f"{KEY_VARIABLE}_FILE"] = str(embedded.secret_key())
        settings = settings_from(args).with_overrides(redis_url=redis_url, postgres_dsn=dsn,
                                                      clickhouse_url=ch_url)
        await cmd_migrate(settings)
        if examples:
            pool = await postgres_pool(settings.postgres_dsn)
            try:
                await admin.apply(pool, _examples_at(examples, embedded.data_dir, args.port),
                                  prune=False, dry_run=False)
            finally:
                await pool.close()
        embedded.publish(redis_url, dsn, api_url(args.host, args.port))
        print(_welcome(args), flush=True)
        await run_roles(list(ROLES), settings, args.host, args.port)
    finally:
        await embedded.stop()


def api_url(host: str, port: int) -> str:
    """Where a command on this machine reaches the API that listens on `host`: a wildcard
    address is reached on loopback."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _examples_at(path: str, data_dir: Path, port: int) -> str:
    """The examples file with its probes of Vigil's own API at `port` (a copy in the data
    directory when the port is not the file's)."""
    text = Path(path).read_text()
    if port == 8080 or EXAMPLE_API not in text:
        return path
    copy = data_dir / "examples.yaml"
    copy.write_text(text.replace(EXAMPLE_API, f"http://127.0.0.1:{port}/"))
    return str(copy)


def _welcome(args: argparse.Namespace) -> str:
    """What a new user reads first: where the page is and what to try in another terminal
    (each command finds this run's servers through the data directory)."""
    where = "" if args.data_dir == DATA_DIR else f" --data-dir {args.data_dir}"
    today = datetime.now(UTC).date()
    return "\n".join([
        f"Vigil is up: status page {api_url(args.host, args.port)}/  (Ctrl-C to stop)",
        "In another terminal, from this directory:",
        f"  vigil monitors list{where}",
        f"  vigil monitors apply -f my-monitors.yaml{where}",
        f"  vigil tokens create me --scope write{where}   # for the API",
        f"  vigil incidents list{where}",
        f"  vigil report --from {today.replace(day=1)} --to {today}{where}",
        f"  vigil queue stats{where}",
        f"API reference: {api_url(args.host, args.port)}/api/docs"])


def _command(args: argparse.Namespace) -> Coroutine[Any, Any, None]:
    if args.command == "up":
        # The default examples file ships with a source checkout, not with a wheel.
        return cmd_up(args, args.examples if Path(args.examples or "-").is_file() else None)
    if (args.command, getattr(args, "action", None)) == ("secrets", "keygen"):
        return cmd_keygen()
    settings = settings_from(args)
    if args.command == "migrate":
        return cmd_print_sql(settings) if args.print_sql else cmd_migrate(settings)
    if args.command in ("monitors", "tokens", "secrets", "maintenance"):
        return cmd_admin(settings, args)
    if args.command in ("channels", "deliveries", "notify"):
        return cmd_notify(settings, args)
    if args.command in ("incidents", "confirmed"):
        return cmd_incidents(settings, args)
    if args.command == "replay":
        return cmd_replay(settings, args.yes)
    if args.command == "report":
        return report_command.run(settings, args)
    if args.command == "queue":
        return queue_commands.run(settings, args)
    roles = {"sink": [f"sink-{getattr(args, 'target', '')}"], "run": getattr(args, "roles", [])}
    return run_roles(roles.get(args.command, [args.command]), settings,
                     getattr(args, "host", "127.0.0.1"), getattr(args, "port", 8080))


def _tune_gc() -> None:
    """A role allocates many short-lived objects per check and keeps few. With CPython's
    defaults the collector ran every 700 allocations and each full pass walked every object
    the imports made: 9% of an executor's CPU (py-spy --native, bench/executor.py). What
    exists at start-up is frozen (never walked again) and young objects are collected
    less often; reference cycles are still found, later."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _tune_gc()
    try:
        vlogging.configure(getattr(args, "log_format", None) or Settings.from_env().log_format)
        uvloop.run(_command(args))
    except (SettingsError, SpecError, MigrationError, EmbeddedError) as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return 2
    except CommandError as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return 1
    except OUTAGES as exc:
        # One line, no traceback: the server is away, the supervisor restarts the role.
        log.error("cannot reach a server; exiting", error=str(exc) or repr(exc))
        return 3
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
