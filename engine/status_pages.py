"""Status pages: the definition (validated with pydantic, every error naming its field) and
its store in Postgres (migration 0012), the one place with SQL about pages.

A page has groups; a group takes monitors by id (in the order written) and by tag (the rest,
by id), and says what its monitors show (the 90-day bar, the uptime figures, the latency
chart), which one monitor may change for itself. Which monitors show probe details is not a
page setting: it stays each monitor's `public_details` (api.status.public), so a page can
never publish what the monitor's owner kept private.

A page is stored as written, as maintenance windows are, in a table of the shape
engine.definitions keeps (`version`, `source` for file and API pages).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine import definitions
from engine.definitions import Plan, Table
from engine.maintenance import _problem, load_section
from engine.monitors import (
    ID_PATTERN,
    MAX_NAME_LENGTH,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    _found_at,
    _has_nul,
)
from engine.store import Conn

# A slug: it is the page's address (/status/{id}).
PAGE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_DESCRIPTION_LENGTH = 2_000
MAX_GROUPS = 100
MAX_GROUP_MONITORS = 1_000


class PageMonitor(BaseModel):
    """One monitor of a group, by id; what it shows where it differs from its group's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=ID_PATTERN)]
    # The name on the page; the monitor's own name (or its id) without one.
    name: str | None = Field(default=None, max_length=MAX_NAME_LENGTH)
    bar: bool | None = None
    uptime: bool | None = None
    latency: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_id(cls, data: Any) -> Any:
        # `monitors: [api, web]` is the short way to write monitors that show what the group
        # shows.
        return {"id": data} if isinstance(data, str) else data


@dataclass(frozen=True, slots=True)
class Entry:
    """A monitor as a page shows it, its group's choices and its own resolved."""

    id: str
    name: str | None
    bar: bool
    uptime: bool
    latency: bool


class PageGroup(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    monitors: list[PageMonitor] = Field(default_factory=list, max_length=MAX_GROUP_MONITORS)
    tags: list[Annotated[str, Field(max_length=MAX_TAG_LENGTH)]] = Field(
        default_factory=list, max_length=MAX_TAGS)
    bar: bool = True
    uptime: bool = True
    latency: bool = True

    @model_validator(mode="after")
    def _some_monitors(self) -> PageGroup:
        if not self.monitors and not self.tags:
            raise _problem("monitors", "name the monitors (ids) or tags the group shows")
        return self

    def entries(self, tags: Mapping[str, Iterable[str]]) -> list[Entry]:
        """The group's monitors among `tags` (monitor id -> its tags): those named, in order,
        then those with one of the group's tags, by id; each once."""
        named = [s for s in self.monitors if s.id in tags]
        seen = {s.id for s in named}
        wanted = set(self.tags)
        tagged = sorted(mid for mid, its in tags.items()
                        if mid not in seen and not wanted.isdisjoint(its))
        return ([self._entry(s) for s in named]
                + [self._entry(PageMonitor(id=mid)) for mid in tagged])

    def _entry(self, shown: PageMonitor) -> Entry:
        return Entry(shown.id, shown.name,
                     self.bar if shown.bar is None else shown.bar,
                     self.uptime if shown.uptime is None else shown.uptime,
                     self.latency if shown.latency is None else shown.latency)


class Page(BaseModel):
    """One status page as written (a `status_pages:` entry, an API body)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=PAGE_ID_PATTERN)]
    title: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    description: str = Field(default="", max_length=MAX_DESCRIPTION_LENGTH)
    groups: list[PageGroup] = Field(min_length=1, max_length=MAX_GROUPS)

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        # Valid JSON and YAML, but no Postgres text can hold it (engine.monitors does the same).
        if (where := _found_at(data, _has_nul)) is not None:
            raise _problem(where or "(page)", "a NUL character cannot be stored")
        return data

    def monitor_ids(self) -> set[str]:
        """The monitors the page names by id."""
        return {s.id for g in self.groups for s in g.monitors}

    def named_at(self) -> list[tuple[str, str]]:
        """(field, monitor id) of every monitor named by id, for errors that name the field."""
        return [(f"groups.{gi}.monitors.{mi}.id", s.id) for gi, g in enumerate(self.groups)
                for mi, s in enumerate(g.monitors)]


class PageError(ValueError):
    """A page that validates but cannot be stored as it is (a monitor that does not exist);
    `problems` are (field, message), as engine.maintenance.errors gives them."""

    def __init__(self, page_id: str, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))
        self.page_id = page_id
        self.problems = problems


# --- the files `vigil monitors apply` reads ---------------------------------------------------

def load_path(path: str) -> list[Page]:
    """The status pages of the files `vigil monitors apply` reads."""
    return load_section(path, "status_pages", Page, "status page", "pages")


# --- the store ----------------------------------------------------------------------------------

TABLE = Table("status_pages", "status page", "status pages")
described = definitions.described
get = TABLE.get
list_all = TABLE.list_all
delete = TABLE.delete
# A monitor is shown when a group of a page names it or has one of its tags. The stored
# definition always holds `monitors` as objects and `tags` as a list (stored()).
SHOWN = """
SELECT m.id FROM monitors m
WHERE EXISTS (
    SELECT 1 FROM status_pages p, jsonb_array_elements(p.definition -> 'groups') g
    WHERE (g -> 'tags') ?| m.tags
       OR (g -> 'monitors') @> jsonb_build_array(jsonb_build_object('id', m.id)))
"""


def stored(page: Page) -> str:
    """The definition as stored: every field, defaults included, so the queries above read
    one shape whatever was written."""
    return orjson.dumps(page.model_dump(mode="json")).decode()


def page_of(row: asyncpg.Record) -> Page:
    return Page.model_validate_json(row["definition"])


async def shown_monitors(pool: asyncpg.Pool) -> set[str]:
    """The ids of the monitors on at least one page: the monitors shown publicly (badges
    are served for these only)."""
    return {r["id"] for r in await pool.fetch(SHOWN)}


async def unknown_monitors(conn: Conn | asyncpg.Pool, page: Page,
                           also: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(field, message) for each monitor the page names by id that is neither stored nor in
    `also` (the monitors an apply is about to write)."""
    found = {r["id"] for r in await conn.fetch("SELECT id FROM monitors WHERE id = ANY($1)",
                                               list(page.monitor_ids()))}
    known = found | set(also)
    return [(where, f"no monitor {mid!r}") for where, mid in page.named_at()
            if mid not in known]


async def _checked(conn: Conn | asyncpg.Pool, page: Page, also: Iterable[str] = ()) -> None:
    if problems := await unknown_monitors(conn, page, also):
        raise PageError(page.id, problems)


async def upsert(conn: Conn | asyncpg.Pool, page: Page, source: str) -> bool | None:
    """True if created, False if changed, None if it was already so; PageError when it names
    a monitor that does not exist."""
    await _checked(conn, page)
    return await TABLE.upsert(conn, page.id, stored(page), source)


async def create(pool: asyncpg.Pool, page: Page, source: str) -> bool:
    """False, and nothing written, when a page with that id exists; PageError as upsert."""
    await _checked(pool, page)
    return await TABLE.create(pool, page.id, stored(page), source)


async def apply(db: asyncpg.Pool | Conn, pages: list[Page], prune: bool, dry_run: bool,
                incoming: Iterable[str] = ()) -> Plan:
    """Make the file pages match `pages` (engine.definitions.Table.apply). `incoming`: the
    ids of the monitors the same apply writes (a dry run has not written them), which pages
    may name. PageError for the first page that names a monitor that is neither."""
    also = set(incoming)

    async def check(conn: Conn) -> None:
        for page in pages:
            await _checked(conn, page, also)

    return await TABLE.apply(db, {p.id: stored(p) for p in pages}, prune, dry_run, check)
