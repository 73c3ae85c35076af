"""Monitors in Postgres: the one place that reads and writes monitor definitions, and the one
place that holds SQL about them (the scheduler's sync, the API's status, push tokens).

Every write bumps `version` only when something changed, and fires the NOTIFY trigger that
carries the change to the schedulers. A spec's secrets are sealed before they are written and
redacted in what is read back (engine.secrets). `source` tells monitors from files (`vigil monitors
apply`) from monitors made through the API; `--prune` only ever deletes file monitors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from secrets import token_urlsafe
from typing import Any

import asyncpg
import orjson
from pydantic import BaseModel

from engine import secrets
from engine.monitors import MonitorBase
from engine.secrets import Keyring
from engine.shards import sql_filter

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


@asynccontextmanager
async def transaction(db: asyncpg.Pool | Conn) -> AsyncIterator[Conn]:
    """A transaction on a connection of the pool, or inside the caller's transaction on its
    connection (a savepoint), so several writes can be made one: `vigil monitors apply`
    writes the files' monitors and maintenance windows together or not at all."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction():
            yield conn
    else:
        async with db.transaction():
            yield db

UPSERT = """
INSERT INTO monitors AS m (id, name, kind, interval_ms, timeout_ms, regions, tags, spec, enabled,
    public_details, source, push_token, alerting)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13::jsonb)
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name, kind = EXCLUDED.kind, interval_ms = EXCLUDED.interval_ms,
    timeout_ms = EXCLUDED.timeout_ms, regions = EXCLUDED.regions, tags = EXCLUDED.tags,
    spec = EXCLUDED.spec, enabled = EXCLUDED.enabled, public_details = EXCLUDED.public_details,
    source = EXCLUDED.source, alerting = EXCLUDED.alerting,
    push_token = CASE WHEN EXCLUDED.kind = 'push'
                      THEN COALESCE(m.push_token, EXCLUDED.push_token) END,
    version = m.version + 1, updated_at = now()
WHERE (m.name, m.kind, m.interval_ms, m.timeout_ms, m.regions, m.tags, m.spec, m.enabled,
       m.public_details, m.source, m.alerting)
   IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.kind, EXCLUDED.interval_ms, EXCLUDED.timeout_ms,
       EXCLUDED.regions, EXCLUDED.tags, EXCLUDED.spec, EXCLUDED.enabled,
       EXCLUDED.public_details, EXCLUDED.source, EXCLUDED.alerting)
RETURNING (xmax = 0) AS created
"""
SELECT = """SELECT id, name, kind, interval_ms, timeout_ms, regions, tags, spec::text AS spec,
    enabled, public_details, alerting::text AS alerting, source, version, push_token, created_at,
    updated_at FROM monitors"""
# The key of a critical monitor's `critical: true` in its stored spec (sealed_spec).
CRITICAL = "critical"
# What a definition is made of; `source` and `version` are bookkeeping.
DEFINITION = ("id", "name", "kind", "interval_ms", "timeout_ms", "regions", "tags", "enabled",
              "public_details")


@dataclass(slots=True)
class Plan:
    """What `apply` would do: ids to create, update (with the fields that change), delete."""

    create: list[str] = field(default_factory=list)
    update: dict[str, list[str]] = field(default_factory=dict)
    delete: list[str] = field(default_factory=list)
    unchanged: int = 0

    def lines(self) -> list[str]:
        return ([f"+ create {mid}" for mid in self.create]
                + [f"~ update {mid} ({', '.join(f)})" for mid, f in self.update.items()]
                + [f"- delete {mid}" for mid in self.delete])

    def summary(self) -> str:
        return (f"{len(self.create)} to create, {len(self.update)} to update, "
                f"{len(self.delete)} to delete, {self.unchanged} unchanged")


def sealed_spec(keyring: Keyring, monitor: MonitorBase,
                old_spec: str | None) -> dict[str, Any]:
    """The monitor's spec as it is stored: its secrets sealed, or kept as stored (`old_spec`,
    the row's spec text) where they are REDACTED or unchanged; `critical` in it when set, so
    the check.due events carry it (a monitor that is not critical stores the spec as before)."""
    spec = monitor.spec
    stored = secrets.seal_spec(keyring, type(spec), spec.model_dump(mode="json"),
                               orjson.loads(old_spec) if old_spec else None)
    return {**stored, CRITICAL: True} if monitor.critical else stored


def _split_critical(spec: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A stored spec as the kind's settings and the monitor's `critical`."""
    return {k: v for k, v in spec.items() if k != CRITICAL}, spec.get(CRITICAL) is True


def monitor_row(monitor: MonitorBase, source: str, spec: dict[str, Any]) -> tuple[Any, ...]:
    token = token_urlsafe(24) if monitor.kind == "push" else None
    return (monitor.id, monitor.name, monitor.kind, monitor.interval_ms, monitor.timeout_ms,
            monitor.regions, monitor.tags, orjson.dumps(spec).decode(),
            monitor.enabled, monitor.public_details, source, token,
            orjson.dumps(alerting(monitor)).decode())


def alerting(monitor: MonitorBase) -> dict[str, Any]:
    """The monitor's `alerting:` as stored: only what differs from the defaults, so a
    definition written without one reads back without one, and a new default reaches every
    monitor that never chose."""
    return monitor.alerting.model_dump(mode="json", exclude_defaults=True)


def _as_stored(row: asyncpg.Record) -> dict[str, Any]:
    spec, critical = _split_critical(orjson.loads(row["spec"]))
    out = {k: row[k] for k in DEFINITION} | {row["kind"]: spec}
    if critical:
        out["critical"] = True
    if rules := orjson.loads(row["alerting"]):
        out["alerting"] = rules
    return out


def definition(row: asyncpg.Record) -> dict[str, Any]:
    """A stored monitor in the shape it is written in (a YAML entry, an API body), its secrets
    REDACTED: a write that sends them back so keeps them."""
    out = _as_stored(row)
    out[row["kind"]] = secrets.redacted(out[row["kind"]])
    return out


def described(row: asyncpg.Record) -> dict[str, Any]:
    """A definition plus its bookkeeping, for the API and `vigil monitors show`."""
    out = definition(row)
    out.update(source=row["source"], version=row["version"],
               created_at=row["created_at"].isoformat(), updated_at=row["updated_at"].isoformat())
    if row["push_token"]:
        out["push_url"] = f"/api/v1/push/{row['push_token']}"
    return out


def _changes(row: asyncpg.Record, monitor: MonitorBase, source: str,
             spec: dict[str, Any]) -> list[str]:
    new = {**monitor.model_dump(mode="json"), monitor.kind: _split_critical(spec)[0]}
    if rules := alerting(monitor):
        new["alerting"] = rules
    else:
        new.pop("alerting")
    old = {"critical": False} | _as_stored(row)
    changed = [k for k in (*DEFINITION, "critical", "alerting", monitor.kind)
               if old.get(k) != new.get(k)]
    if row["source"] != source:
        changed.append("source")
    return changed


async def _write(conn: Conn, monitor: MonitorBase, source: str,
                 spec: dict[str, Any]) -> bool | None:
    created: bool | None = await conn.fetchval(UPSERT, *monitor_row(monitor, source, spec))
    return created


async def upsert(conn: Conn, monitor: MonitorBase, source: str,
                 keyring: Keyring) -> bool | None:
    """True if created, False if updated, None if nothing changed. Raises
    engine.secrets.SecretError when a secret cannot be sealed (no key) or kept (none stored)."""
    old_spec = None
    if secrets.secret_fields(type(monitor.spec)):
        old_spec = await conn.fetchval("SELECT spec::text FROM monitors WHERE id = $1",
                                       monitor.id)
    return await _write(conn, monitor, source, sealed_spec(keyring, monitor, old_spec))


async def plan_apply(conn: Conn, monitors: list[MonitorBase], prune: bool,
                     keyring: Keyring) -> tuple[Plan, dict[str, dict[str, Any]]]:
    """What apply would do, and each monitor's spec as it would be stored (sealed once, from
    the stored rows read here: an unchanged secret keeps its stored text)."""
    rows = {r["id"]: r for r in await conn.fetch(f"{SELECT} WHERE id = ANY($1) OR source = 'file'",
                                                 [m.id for m in monitors])}
    plan = Plan()
    specs = {}
    for monitor in monitors:
        row = rows.get(monitor.id)
        specs[monitor.id] = spec = sealed_spec(keyring, monitor,
                                               None if row is None else row["spec"])
        if row is None:
            plan.create.append(monitor.id)
        elif changed := _changes(row, monitor, "file", spec):
            plan.update[monitor.id] = changed
        else:
            plan.unchanged += 1
    if prune:
        wanted = {m.id for m in monitors}
        plan.delete = sorted(mid for mid, r in rows.items()
                             if r["source"] == "file" and mid not in wanted)
    return plan, specs


async def apply(db: asyncpg.Pool | Conn, monitors: list[MonitorBase], prune: bool,
                dry_run: bool, keyring: Keyring) -> Plan:
    """Declarative apply of file monitors: plan, then (unless dry_run) carry the plan out in
    one transaction, so a failure part-way leaves the database as it was."""
    async with transaction(db) as conn:
        plan, specs = await plan_apply(conn, monitors, prune, keyring)
        if not dry_run:
            for monitor in monitors:
                await _write(conn, monitor, "file", specs[monitor.id])
            await conn.execute("DELETE FROM monitors WHERE id = ANY($1)", plan.delete)
    return plan


async def get(pool: asyncpg.Pool, monitor_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await pool.fetchrow(f"{SELECT} WHERE id = $1", monitor_id)
    return row


async def list_all(pool: asyncpg.Pool, tag: str | None = None) -> list[asyncpg.Record]:
    if tag is None:
        return await pool.fetch(f"{SELECT} ORDER BY id")
    return await pool.fetch(f"{SELECT} WHERE $1 = ANY(tags) ORDER BY id", tag)


async def page(pool: asyncpg.Pool, limit: int, after: str = "",
               tag: str | None = None) -> list[asyncpg.Record]:
    """Up to `limit` monitors (with `tag`) in id order, those after the id `after` (the default
    '' sorts before every id). Keyset, not OFFSET: each page starts where the primary key's
    index finds `after`, so the last page of a million costs what the first does."""
    if tag is None:
        return await pool.fetch(f"{SELECT} WHERE id > $1 ORDER BY id LIMIT $2", after, limit)
    return await pool.fetch(f"{SELECT} WHERE id > $1 AND $3 = ANY(tags) ORDER BY id LIMIT $2",
                            after, limit, tag)


async def set_enabled(pool: asyncpg.Pool, monitor_id: str, enabled: bool) -> bool:
    """Pause or resume; False when there is no such monitor."""
    row = await pool.fetchrow(
        """UPDATE monitors SET enabled = $2,
               version = version + CASE WHEN enabled = $2 THEN 0 ELSE 1 END,
               updated_at = CASE WHEN enabled = $2 THEN updated_at ELSE now() END
           WHERE id = $1 RETURNING id""", monitor_id, enabled)
    return row is not None


async def delete(pool: asyncpg.Pool, monitor_id: str) -> bool:
    return await pool.fetchval("DELETE FROM monitors WHERE id = $1 RETURNING true",
                               monitor_id) is not None


async def reseal_all(pool: asyncpg.Pool, keyring: Keyring,
                     specs: Mapping[str, type[BaseModel]]) -> int:
    """Seal every stored secret again with the first key (`specs`: kind -> its spec model);
    the number of monitors changed. Each change is a new version, so the schedulers put the
    new text into the check events."""
    changed = 0
    async with pool.acquire() as conn, conn.transaction():
        # FOR UPDATE: a write in between would be overwritten with the spec read here.
        for row in await conn.fetch(
                "SELECT id, kind, spec::text AS spec FROM monitors FOR UPDATE"):
            spec = orjson.loads(row["spec"])
            new = secrets.resealed(keyring, specs[row["kind"]], spec)
            if new != spec:
                changed += 1
                await conn.execute("UPDATE monitors SET spec = $2::jsonb, version = version + 1, "
                                   "updated_at = now() WHERE id = $1", row["id"],
                                   orjson.dumps(new).decode())
    return changed


# --- what the scheduler compiles into plans ---------------------------------------------------

@dataclass(frozen=True, slots=True)
class Shard:
    """Shard `number` of `count` (engine.shards): the monitors one scheduler serves."""

    number: int
    count: int


PLAN_COLUMNS = ("id, kind, interval_ms, timeout_ms, regions, spec::text AS spec, version, "
                "revision, alerting::text AS alerting")


def _of_shard(shard: Shard | None, param: int) -> str:
    """The WHERE term that keeps one shard's monitors, or none for every monitor."""
    return "" if shard is None or shard.count == 1 else f" AND {sql_filter(shard.count, param)}"


def _shard_args(shard: Shard | None) -> tuple[int, ...]:
    return () if shard is None or shard.count == 1 else (shard.number,)


async def revisions(pool: asyncpg.Pool, shard: Shard | None = None) -> dict[str, int]:
    """Enabled monitor id -> revision: what the schedule (of one shard) must hold. Read as
    two arrays in one row: a million rows as records took twice as long, four times the CPU."""
    [row] = await pool.fetch(
        "SELECT array_agg(id) AS ids, array_agg(revision) AS revisions FROM monitors "
        f"WHERE enabled{_of_shard(shard, 1)}", *_shard_args(shard))
    return dict(zip(row["ids"] or (), row["revisions"] or (), strict=True))


async def regions(pool: asyncpg.Pool, shard: Shard | None = None) -> set[str]:
    """Every region an enabled monitor (of one shard) is checked from."""
    return {r["region"] for r in await pool.fetch(
        "SELECT DISTINCT unnest(regions) AS region FROM monitors "
        f"WHERE enabled{_of_shard(shard, 1)}", *_shard_args(shard))}


async def plan_rows(pool: asyncpg.Pool, ids: list[str],
                    shard: Shard | None = None) -> list[asyncpg.Record]:
    """The enabled monitors among `ids` (of one shard), with what a plan is compiled from."""
    return await pool.fetch(f"SELECT {PLAN_COLUMNS} FROM monitors WHERE id = ANY($1) AND enabled"
                            f"{_of_shard(shard, 2)}", ids, *_shard_args(shard))


# --- current status, joined with the definitions ------------------------------------------------

# public_details: whether a public page may show the error text (the API decides what to show).
STATUS = """
SELECT m.id, m.name, m.kind, m.enabled, m.public_details, m.interval_ms, s.region, s.status,
       s.since_ms, s.check_id, s.scheduled_ms, s.finished_ms, s.latency_ms, s.status_code,
       s.error_kind, s.error
FROM monitors m LEFT JOIN monitor_status s ON s.monitor_id = m.id
ORDER BY m.id, s.region
"""


async def status_rows(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """Every monitor with its status per region (one row with nulls before its first result)."""
    return [dict(r) for r in await pool.fetch(STATUS)]


async def latest_status(pool: asyncpg.Pool) -> dict[str, str]:
    """Monitor id -> the status of its most recently scheduled result, over all regions."""
    return {r["monitor_id"]: r["status"] for r in await pool.fetch(
        "SELECT DISTINCT ON (monitor_id) monitor_id, status FROM monitor_status "
        "ORDER BY monitor_id, scheduled_ms DESC")}


async def existing(pool: asyncpg.Pool, ids: list[str], shard: Shard | None = None) -> set[str]:
    """Those of `ids` that are monitors (of one shard), enabled or not."""
    return {r["id"] for r in await pool.fetch(
        f"SELECT id FROM monitors WHERE id = ANY($1){_of_shard(shard, 2)}", ids,
        *_shard_args(shard))}


async def exists(pool: asyncpg.Pool, monitor_id: str) -> bool:
    return await pool.fetchval("SELECT true FROM monitors WHERE id = $1", monitor_id) is not None


async def push_monitor(pool: asyncpg.Pool, token: str) -> str | None:
    """The id of the push monitor whose token this is, or None."""
    monitor_id: str | None = await pool.fetchval(
        "SELECT id FROM monitors WHERE push_token = $1 AND kind = 'push'", token)
    return monitor_id
