"""The `vigil` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import structlog
import uvloop

from engine import logging as vlogging
from engine.clickhouse import ClickHouse
from engine.connections import postgres_pool
from engine.embedded import Embedded, EmbeddedError
from engine.migrate import MigrationError, migrate
from engine.monitors import SpecError, load_file
from engine.roles import ROLES, run_roles
from engine.settings import Settings, SettingsError
from engine.store import upsert_monitors

log = structlog.get_logger(component="cli")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "monitors.yaml"


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connections (override VIGIL_* variables)")
    g.add_argument("--redis-url", help="VIGIL_REDIS_URL: redis://, rediss:// or unix://")
    g.add_argument("--postgres-dsn", help="VIGIL_POSTGRES_DSN: postgresql://...")
    g.add_argument("--clickhouse-url", help="VIGIL_CLICKHOUSE_URL: http(s)://... or chdb:///path")
    g.add_argument("--region", help="VIGIL_REGION (default: default)")
    g.add_argument("--concurrency", type=int, help="VIGIL_CONCURRENCY: checks at once (256)")
    g.add_argument("--instance-id", help="VIGIL_INSTANCE_ID (default: host-pid)")
    g.add_argument("--log-format", choices=("console", "json"), help="VIGIL_LOG_FORMAT")
    g.add_argument("--metrics-port", type=int, help="VIGIL_METRICS_PORT: serve /metrics (0: off)")
    return p


def parser() -> argparse.ArgumentParser:
    common = _common()
    top = argparse.ArgumentParser(prog="vigil", description="Event-sourced uptime monitoring.")
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("scheduler", parents=[common], help="dispatch due checks")
    sub.add_parser("executor", parents=[common], help="run checks")
    sink = sub.add_parser("sink", parents=[common], help="write results")
    sink.add_argument("target", choices=("clickhouse", "status"))
    for name, helptext in (("api", "serve the HTTP API and status page"),
                           ("run", "run several roles in one process")):
        p = sub.add_parser(name, parents=[common], help=helptext)
        if name == "run":
            p.add_argument("roles", nargs="+", metavar="ROLE", choices=ROLES,
                           help=", ".join(ROLES))
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8080)
    sub.add_parser("migrate", parents=[common], help="apply database migrations")
    monitors = sub.add_parser("monitors", help="manage monitors")
    msub = monitors.add_subparsers(dest="action", required=True)
    apply = msub.add_parser("apply", parents=[common], help="validate and upsert from YAML")
    apply.add_argument("-f", "--file", required=True)
    up = sub.add_parser("up", parents=[common], help="everything in one process, embedded")
    up.add_argument("--data-dir", default=".vigil")
    up.add_argument("--port", type=int, default=8080)
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--examples", default=str(EXAMPLES),
                    help="monitors file loaded at start if it exists ('' for none)")
    return top


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        redis_url=args.redis_url, postgres_dsn=args.postgres_dsn,
        clickhouse_url=args.clickhouse_url, region=args.region, concurrency=args.concurrency,
        instance_id=args.instance_id, log_format=args.log_format, metrics_port=args.metrics_port)


async def cmd_migrate(settings: Settings) -> None:
    ch = ClickHouse.from_url(settings.clickhouse_url)
    try:
        applied = await migrate(settings.postgres_dsn, ch)
    finally:
        await ch.close()
    log.info("migrations done", applied=applied)


async def cmd_apply(settings: Settings, path: str) -> None:
    monitors = load_file(path)
    pool = await postgres_pool(settings.postgres_dsn)
    try:
        report = await upsert_monitors(pool, monitors, source="file")
    finally:
        await pool.close()
    print(f"{path}: {report.created} created, {report.updated} updated, "
          f"{report.unchanged} unchanged")


async def cmd_up(args: argparse.Namespace, examples: str | None) -> None:
    embedded = Embedded(Path(args.data_dir))
    redis_url, dsn, ch_url = await embedded.start(args.redis_url, args.postgres_dsn,
                                                  args.clickhouse_url)
    try:
        settings = settings_from(args).with_overrides(redis_url=redis_url, postgres_dsn=dsn,
                                                      clickhouse_url=ch_url)
        await cmd_migrate(settings)
        if examples:
            await cmd_apply(settings, examples)
        print(f"Vigil is up: status page http://{args.host}:{args.port}/  "
              f"(Ctrl-C to stop)", flush=True)
        await run_roles(list(ROLES), settings, args.host, args.port)
    finally:
        await embedded.stop()


def _command(args: argparse.Namespace) -> Coroutine[Any, Any, None]:
    if args.command == "up":
        # The default examples file ships with a source checkout, not with a wheel.
        return cmd_up(args, args.examples if Path(args.examples or "-").is_file() else None)
    settings = settings_from(args)
    if args.command == "migrate":
        return cmd_migrate(settings)
    if args.command == "monitors":
        return cmd_apply(settings, args.file)
    roles = {"sink": [f"sink-{getattr(args, 'target', '')}"], "run": getattr(args, "roles", [])}
    return run_roles(roles.get(args.command, [args.command]), settings,
                     getattr(args, "host", "127.0.0.1"), getattr(args, "port", 8080))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        vlogging.configure(args.log_format or Settings.from_env().log_format)
        uvloop.run(_command(args))
    except (SettingsError, SpecError, MigrationError, EmbeddedError) as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
