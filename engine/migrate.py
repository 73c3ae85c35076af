"""Versioned SQL migrations for Postgres and ClickHouse.

The runner holds a Postgres advisory lock for the whole run (both databases), so two
`vigil migrate` at once apply each file once; it refuses a database newer than the code.

On a ClickHouse cluster (VIGIL_CLICKHOUSE_CLUSTER) the same files are rewritten statement by
statement (ClusterDDL), so the single-server files stay the one source of truth and run
unchanged on one server.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from importlib import resources

import asyncpg
import structlog

from engine.clickhouse import ClickHouse

LOCK_ID = 0x56_49_47_49_4C  # "VIGIL"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
log = structlog.get_logger(component="migrate")
# Vigil's bookkeeping of the ClickHouse versions applied; rewritten for a cluster as any file.
BOOKKEEPING = """CREATE TABLE IF NOT EXISTS vigil_schema_migrations
        (version UInt32, name String, applied_at DateTime DEFAULT now())
        ENGINE = MergeTree ORDER BY version"""


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load(backend: str) -> list[Migration]:
    """The migrations shipped with the code, in version order; versions must be unique."""
    folder = resources.files("migrations") / backend
    found: list[Migration] = []
    for item in folder.iterdir():
        match = _NAME.match(item.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), item.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{backend}: duplicate migration versions in {versions}")
    return found


def statements(sql: str) -> list[str]:
    """ClickHouse runs one statement per request; files separate them with `;` at a line end."""
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in re.split(r";\s*$", body, flags=re.M) if s.strip()]


# --- the same files for a ClickHouse cluster ---

LOCAL = "_local"
# Where a replicated table's replicas meet in Keeper: {shard} and {replica} are each server's
# macros; {database} and {table} are filled in when the table is created and then kept.
KEEPER_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
_QUOTABLE = re.compile(r"[\w-]+", re.A)
_CREATE_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (?P<name>\w+)\s+(?P<body>.*?)\s*"
                           r"ENGINE = (?P<engine>\w+)(?:\((?P<args>[^()]*)\))?"
                           r"(?P<rest>(?:\s.*)?)", re.S)
_CREATE_VIEW = re.compile(r"CREATE MATERIALIZED VIEW IF NOT EXISTS (?P<name>\w+) "
                          r"TO (?P<target>\w+) AS\s(?P<select>.*)", re.S)
_ALTER = re.compile(r"ALTER TABLE (?P<name>\w+) (?P<command>.*)", re.S)
_COLUMN_COMMAND = re.compile(r"(ADD|DROP|MODIFY|RENAME|COMMENT) COLUMN ")
_PARTITION_COMMAND = re.compile(r"(?P<head>(ATTACH|REPLACE) PARTITION .+ FROM )(?P<source>\w+)",
                                re.S)
_RENAME = re.compile(r"RENAME TABLE IF EXISTS (?P<old>\w+) TO (?P<new>\w+)")


class ClusterDDL:
    """The single-server statements rewritten for a cluster, fed in migration order. A table
    NAME becomes NAME_local, its engine's Replicated form, with NAME a Distributed table in
    front of it: every insert and query keeps its table name. Tables with a monitor_id are
    sharded by its hash, so a monitor's rows, raw and rolled up, all live on one shard, where
    FINAL folds its duplicates and the views sum them; a view reads and writes the local
    tables of its own node."""

    def __init__(self, cluster: str, database: str) -> None:
        for what, value in (("cluster", cluster), ("database", database)):
            if not _QUOTABLE.fullmatch(value):
                raise MigrationError(f"ClickHouse {what} {value!r}: expected A-Z a-z 0-9 _ -")
        self.cluster, self.database = cluster, database
        self.on = f" ON CLUSTER '{cluster}'"
        self.version = 0
        # The local tables made so far, by their single-server name: sharded by monitor?
        self.by_monitor: dict[str, bool] = {}
        self.fronted: set[str] = set()  # names with a Distributed table in front
        self.renamed: set[str] = set()  # names whose Keeper path a renamed table still holds

    def migration(self, m: Migration) -> Migration:
        self.version = m.version
        return replace(m, sql=";\n".join(out for statement in statements(m.sql)
                                         for out in self.rewrite(statement)))

    def rewrite(self, statement: str) -> list[str]:
        rules: list[tuple[re.Pattern[str], Callable[[re.Match[str]], list[str]]]] = [
            (_CREATE_TABLE, self._table), (_CREATE_VIEW, self._view), (_ALTER, self._alter),
            (_RENAME, self._rename)]
        for pattern, rule in rules:
            if match := pattern.fullmatch(statement):
                return rule(match)
        raise MigrationError(f"no cluster form for: {statement[:80]}")

    def _known(self, name: str) -> str:
        if name not in self.by_monitor:
            raise MigrationError(f"cluster DDL: {name} is not a table an earlier statement made")
        return name

    def _table(self, m: re.Match[str]) -> list[str]:
        name, body, engine = m["name"], m["body"], m["engine"]
        if not engine.endswith("MergeTree") or engine.startswith("Replicated"):
            raise MigrationError(f"cluster DDL: {name}: no Replicated form of {engine}")
        if copied := re.fullmatch(r"AS (\w+)", body):
            by_monitor = self.by_monitor[self._known(copied[1])]
            body = f"AS {copied[1]}{LOCAL}"
        else:
            by_monitor = re.search(r"^\s*\(?\s*monitor_id\s", body, re.M) is not None
        # A new table under a name a renamed one had would find that one's replicas there.
        path = KEEPER_PATH + (f"_{self.version:04d}" if name in self.renamed else "")
        args = ", ".join([f"'{path}'", "'{replica}'", *([m["args"]] if m["args"] else [])])
        # Replicated tables deduplicate a repeated insert block by their own setting.
        rest = m["rest"].replace("non_replicated_deduplication_window",
                                 "replicated_deduplication_window")
        key = "cityHash64(monitor_id)" if by_monitor else "rand()"
        self.by_monitor[name] = by_monitor
        self.fronted.add(name)
        return [f"CREATE TABLE IF NOT EXISTS {name}{LOCAL}{self.on} {body}\n"
                f"ENGINE = Replicated{engine}({args}){rest}",
                f"CREATE TABLE IF NOT EXISTS {name}{self.on} AS {name}{LOCAL}\n"
                f"ENGINE = Distributed('{self.cluster}', '{self.database}', '{name}{LOCAL}', "
                f"{key})"]

    def _view(self, m: re.Match[str]) -> list[str]:
        """The view sees the inserts into the local table on the node that takes them (the
        rows of its shard) and writes the local target there, which replicates it; the alias
        keeps the SELECT's qualified column names (check_results.maintenance) meaning what
        they did."""
        def local(ref: re.Match[str]) -> str:
            keyword, table = ref[1], ref[2]
            return f"{keyword} {table}{LOCAL} AS {table}" if table in self.by_monitor else ref[0]

        select = re.sub(r"\b(FROM|JOIN) (\w+)\b", local, m["select"])
        return [f"CREATE MATERIALIZED VIEW IF NOT EXISTS {m['name']}{self.on} "
                f"TO {self._known(m['target'])}{LOCAL} AS\n{select}"]

    def _alter(self, m: re.Match[str]) -> list[str]:
        """A column change reaches the local table and then the Distributed one (which may lack
        a column the local has, not the reverse); a partition move is between local tables."""
        name, command = self._known(m["name"]), m["command"]
        if _COLUMN_COMMAND.match(command):
            return [f"ALTER TABLE {table}{self.on} {command}"
                    for table in [name + LOCAL, *([name] if name in self.fronted else [])]]
        if moved := _PARTITION_COMMAND.fullmatch(command):
            return [f"ALTER TABLE {name}{LOCAL}{self.on} {moved['head']}"
                    f"{self._known(moved['source'])}{LOCAL}"]
        raise MigrationError(f"no cluster form for: ALTER TABLE {name} {command[:60]}")

    def _rename(self, m: re.Match[str]) -> list[str]:
        """A Distributed table names its local table rather than following it: the one in
        front of the old name is dropped (it holds no rows) and a later CREATE of that name
        makes the pair anew. The renamed local table keeps its Keeper path."""
        old, new = self._known(m["old"]), m["new"]
        self.by_monitor[new] = self.by_monitor.pop(old)
        self.renamed.add(old)
        out = [f"RENAME TABLE IF EXISTS {old}{LOCAL} TO {new}{LOCAL}{self.on}"]
        if old in self.fronted:
            self.fronted.discard(old)
            out.append(f"DROP TABLE IF EXISTS {old}{self.on}")
        return out


def plan(cluster: str = "", database: str = "default") -> tuple[list[str], list[Migration]]:
    """The bookkeeping statements and the ClickHouse migrations, for one server (cluster "")
    or for `cluster`, whose Distributed tables point at `database`."""
    if not cluster:
        return [BOOKKEEPING], load("clickhouse")
    ddl = ClusterDDL(cluster, database)
    return ddl.rewrite(BOOKKEEPING), [ddl.migration(m) for m in load("clickhouse")]


def clickhouse_script(cluster: str = "", database: str = "default") -> str:
    """Every ClickHouse statement `migrate` runs on an empty database, as a script for
    clickhouse-client --multiquery: what an operator reads before migrating (vigil migrate
    --print-sql)."""
    bookkeeping, code = plan(cluster, database)
    lines = ["-- bookkeeping", *(s + ";" for s in bookkeeping)]
    for m in code:
        lines += [f"-- {m.version:04d}_{m.name}", *(s + ";" for s in statements(m.sql))]
    return "\n".join(lines) + "\n"


async def script_for(ch: ClickHouse, cluster: str) -> str:
    """clickhouse_script for the database `ch` connects to, as `migrate` would run it."""
    return clickhouse_script(cluster, await _database(ch))


async def _database(ch: ClickHouse) -> str:
    """The database Vigil's tables are in: the one its URL names (the Distributed tables
    point at it by name)."""
    return str((await ch.rows("SELECT currentDatabase()"))[0][0])


async def _apply_pending(backend: str, code: Sequence[Migration], applied: set[int],
                         apply: Callable[[Migration], Awaitable[None]]) -> list[int]:
    """Apply the code's migrations the database lacks, in order; refuse a newer database."""
    newest_code = max((m.version for m in code), default=0)
    newer = sorted(v for v in applied if v > newest_code)
    if newer:
        raise MigrationError(f"{backend} schema is at version {max(newer)}, newer than this "
                             f"code ({newest_code}); upgrade Vigil instead of migrating down")
    done = []
    for m in code:
        if m.version not in applied:
            await apply(m)
            log.info("migration applied", backend=backend, version=m.version, name=m.name)
            done.append(m.version)
    return done


async def _postgres(conn: asyncpg.Connection) -> list[int]:
    await conn.execute("""CREATE TABLE IF NOT EXISTS vigil_schema_migrations (
        version integer PRIMARY KEY, name text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now())""")
    rows = await conn.fetch("SELECT version FROM vigil_schema_migrations")

    async def apply(m: Migration) -> None:
        async with conn.transaction():
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO vigil_schema_migrations (version, name) VALUES ($1, $2)",
                m.version, m.name)

    return await _apply_pending("postgres", load("postgres"), {r["version"] for r in rows},
                                apply)


async def _clickhouse(ch: ClickHouse, cluster: str) -> list[int]:
    database = ""
    if cluster:
        await _refuse_background_inserts(ch)
        database = await _database(ch)
    bookkeeping, code = plan(cluster, database)
    for statement in bookkeeping:
        await ch.command(statement)
    rows = await ch.rows("SELECT version FROM vigil_schema_migrations")

    async def apply(m: Migration) -> None:
        # ClickHouse has no DDL transactions: files use IF NOT EXISTS so a rerun after a
        # failure part-way is harmless; the version is recorded last.
        for statement in statements(m.sql):
            await ch.command(statement)
        await ch.insert("vigil_schema_migrations", [[m.version, m.name]], ["version", "name"])

    return await _apply_pending("clickhouse", code, {int(r[0]) for r in rows}, apply)


async def _refuse_background_inserts(ch: ClickHouse) -> None:
    """A Distributed table's insert returns, by default, once the rows are queued on the
    node Vigil talks to, not on their shard: a sink would acknowledge results one disk holds,
    and the settle step could correct an hour twice while a queue waits."""
    if not int((await ch.rows("SELECT getSetting('distributed_foreground_insert')"))[0][0]):
        raise MigrationError("VIGIL_CLICKHOUSE_CLUSTER needs distributed_foreground_insert = 1 "
                             "in the profile of Vigil's ClickHouse user "
                             "(docs/clickhouse-cluster.md)")


async def migrate(postgres_dsn: str, ch: ClickHouse, cluster: str = ""
                  ) -> dict[str, list[int]]:
    """Apply what either database lacks; `cluster`: the ClickHouse cluster's name, or "" for
    one server."""
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
        try:
            return {"postgres": await _postgres(conn), "clickhouse": await _clickhouse(ch, cluster)}
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)
    finally:
        await conn.close()
