"""Admin commands run against Postgres: `vigil monitors ...`, `vigil tokens ...` and
`vigil secrets rotate`."""

from __future__ import annotations

import sys

import asyncpg
import yaml
from redis.exceptions import RedisError

from api import tokens
from engine import maintenance, maintenance_store, registry, status_pages, store
from engine.clock import redis_ms
from engine.connections import redis_client
from engine.keys import Keys
from engine.maintenance import Window
from engine.monitors import MonitorBase, SpecError
from engine.secrets import Keyring, SecretError
from engine.status_pages import Page, PageError
from executors.kinds import KINDS, SCHEMA


class CommandError(RuntimeError):
    """The command could not do what was asked (no such monitor ...); exit status 1."""


async def apply(pool: asyncpg.Pool, path: str, prune: bool, dry_run: bool,
                served_by: tuple[str, Keys] | None = None) -> None:
    """`served_by` (a Redis URL and the shard's keys) checks that executors serve the regions
    the files name, and warns for each one nothing serves."""
    monitors, windows, pages = definitions(path)  # validates all before anything is written
    if served_by is not None:
        await warn_unserved(*served_by, {r for m in monitors if m.enabled for r in m.regions})
    # One transaction for all: a failure part-way leaves monitors, windows and pages as they
    # were.
    async with store.transaction(pool) as conn:
        try:
            plan = await store.apply(conn, monitors, prune=prune, dry_run=dry_run,
                                     keyring=Keyring.from_env())
        except SecretError as exc:
            raise CommandError(f"{path}: {exc}") from None
        windows_plan = await maintenance_store.apply(conn, windows, prune=prune,
                                                     dry_run=dry_run)
        try:
            pages_plan = await status_pages.apply(conn, pages, prune=prune, dry_run=dry_run,
                                                  incoming=[m.id for m in monitors])
        except PageError as exc:
            raise CommandError("\n".join(f"{path}: status page {exc.page_id!r}: {f}: {m}"
                                          for f, m in exc.problems)) from None
    for line in plan.lines():
        print(line)
    if dry_run:
        print(f"{path}: dry run, nothing written: {plan.summary()}")
    else:
        print(f"{path}: {len(plan.create)} created, {len(plan.update)} updated, "
              f"{plan.unchanged} unchanged, {len(plan.delete)} deleted")
    if windows or windows_plan.delete:
        for line in windows_plan.lines():
            print(line)
        print(f"{path}: {'dry run, nothing written: ' if dry_run else ''}"
              f"{windows_plan.summary()}")
    if pages or pages_plan.delete:
        for line in pages_plan.lines():
            print(line)
        print(f"{path}: {'dry run, nothing written: ' if dry_run else ''}"
              f"{pages_plan.summary()}")


def definitions(path: str) -> tuple[list[MonitorBase], list[Window], list[Page]]:
    """The files' monitors, maintenance windows and status pages, every one validated; one
    SpecError with the problems of all (a file that cannot be read is named once)."""
    problems: list[str] = []
    monitors: list[MonitorBase] = []
    windows: list[Window] = []
    pages: list[Page] = []
    try:
        monitors = SCHEMA.load_path(path)
    except SpecError as exc:
        problems += exc.problems
    try:
        windows = maintenance.load_path(path)
    except SpecError as exc:
        problems += exc.problems
    try:
        pages = status_pages.load_path(path)
    except SpecError as exc:
        problems += exc.problems
    if problems:
        raise SpecError(list(dict.fromkeys(problems)))
    return monitors, windows, pages


async def warn_unserved(redis_url: str, keys: Keys, regions: set[str]) -> None:
    """`keys`: a shard every executor serves (each serves every shard unless told otherwise:
    VIGIL_SERVE_SHARDS)."""
    r = redis_client(redis_url)
    try:
        seen = await registry.executors(r, keys)
        now = await redis_ms(r)
    except (RedisError, OSError) as exc:
        print(f"warning: cannot tell which regions executors serve: {exc}", file=sys.stderr)
        return
    finally:
        await r.aclose()
    live, ever = registry.served(seen, now)
    for region in sorted(regions - ever):
        print(f"warning: region {region!r}: no executor has ever served it; its checks run "
              f"once one does (VIGIL_REGION={region})", file=sys.stderr)
    for region in sorted((regions & ever) - live):
        print(f"warning: region {region!r}: no executor serves it now", file=sys.stderr)


# Monitors `vigil monitors list` reads from Postgres at a time.
LIST_PAGE = 1_000


async def list_monitors(pool: asyncpg.Pool, tag: str | None) -> None:
    """Printed a page at a time (store.page), so a million monitors are never all in memory."""
    status = await store.latest_status(pool)
    print(f"{'ID':32} {'KIND':9} {'INTERVAL':>9} {'STATE':7} {'SOURCE':6} STATUS")
    after = ""
    while rows := await store.page(pool, LIST_PAGE, after, tag):
        for r in rows:
            state = "active" if r["enabled"] else "paused"
            print(f"{r['id']:32} {r['kind']:9} {r['interval_ms'] / 1000:>8g}s {state:7} "
                  f"{r['source']:6} {status.get(r['id'], '-')}")
        after = rows[-1]["id"]


async def show(pool: asyncpg.Pool, monitor_id: str) -> None:
    row = await store.get(pool, monitor_id)
    if row is None:
        raise CommandError(f"no monitor {monitor_id!r}")
    print(yaml.safe_dump(store.described(row), sort_keys=False).rstrip())


async def set_enabled(pool: asyncpg.Pool, monitor_id: str, enabled: bool) -> None:
    if not await store.set_enabled(pool, monitor_id, enabled):
        raise CommandError(f"no monitor {monitor_id!r}")
    print(f"{monitor_id}: {'resumed' if enabled else 'paused'}")


async def delete(pool: asyncpg.Pool, monitor_id: str) -> None:
    if not await store.delete(pool, monitor_id):
        raise CommandError(f"no monitor {monitor_id!r}")
    print(f"{monitor_id}: deleted")


async def secrets_rotate(pool: asyncpg.Pool) -> None:
    try:
        changed = await store.reseal_all(pool, Keyring.from_env(),
                                         {name: kind.spec for name, kind in KINDS.items()})
    except SecretError as exc:
        raise CommandError(f"cannot re-seal: {exc}") from None
    print(f"{changed} monitor(s) re-sealed with the first key of VIGIL_SECRET_KEY; drop the old "
          "key once every scheduler has synced and the checks sealed with it have run")


async def token_create(pool: asyncpg.Pool, name: str, scope: tokens.Scope,
                       expires_ms: int | None) -> None:
    token = await tokens.create(pool, name, scope, expires_ms)
    print(token)
    print(f"token {name!r} (scope {scope}) created; it is shown this once (only its hash is "
          "stored)", flush=True)


async def token_list(pool: asyncpg.Pool) -> None:
    for r in await tokens.list_all(pool):
        state = "revoked" if r["revoked_at"] else "expired" if r["expired"] else "active"
        used = r["last_used_at"].isoformat() if r["last_used_at"] else "never"
        expires = r["expires_at"].isoformat() if r["expires_at"] else "never"
        print(f"{r['name']:24} {r['scope']:5} {state:8} created {r['created_at'].isoformat()}  "
              f"expires {expires}  last used {used}")


async def token_revoke(pool: asyncpg.Pool, name: str) -> None:
    if not await tokens.revoke(pool, name):
        raise CommandError(f"no active token named {name!r}")
    print(f"token {name!r} revoked")
