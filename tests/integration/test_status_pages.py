"""Status pages on real Postgres, chDB and Redis: the definitions (API and `monitors apply`),
their validation errors naming the field with nothing written, the set of monitors shown
publicly, the rendered page holding what the test wrote (and no probe detail that is not
public), and the live stream delivering what the test adds to the events stream."""

from __future__ import annotations

from typing import Any

import pytest

from engine import status_pages
from engine.status_pages import Page, PageError
from executors.kinds import SCHEMA
from tests.support.helpers import store_monitors


def tcp(monitor_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": monitor_id, "kind": "tcp", "tcp": {"host": "127.0.0.1", "port": 9}, **extra}


@pytest.fixture
async def pages(pool, clean):
    await pool.execute("TRUNCATE status_pages")


async def test_shown_monitors_are_those_a_page_names_or_tags(pool, pages):
    await store_monitors(pool, SCHEMA.parse([
        tcp("api", tags=["web"]), tcp("web", tags=["web", "edge"]), tcp("db", tags=["db"]),
        tcp("private"), tcp("cron", tags=["batch"])]), source="api")
    assert await status_pages.shown_monitors(pool) == set()
    await status_pages.upsert(pool, Page.model_validate({
        "id": "public", "title": "Public", "groups": [
            {"name": "Web", "tags": ["edge"]}, {"name": "Data", "monitors": ["db"]}]}), "api")
    await status_pages.upsert(pool, Page.model_validate({
        "id": "other", "title": "Other", "groups": [
            {"name": "All web", "tags": ["web"], "monitors": [{"id": "cron", "bar": False}]}]}),
        "api")
    assert await status_pages.shown_monitors(pool) == {"api", "web", "db", "cron"}
    # A monitor removed since is not shown, though a page still names it.
    await pool.execute("DELETE FROM monitors WHERE id = 'db'")
    assert await status_pages.shown_monitors(pool) == {"api", "web", "cron"}
    assert await status_pages.delete(pool, "other")
    assert await status_pages.shown_monitors(pool) == {"web"}


async def test_a_page_naming_an_unknown_monitor_says_which_and_writes_nothing(pool, pages):
    await store_monitors(pool, SCHEMA.parse([tcp("api")]), source="api")
    page = Page.model_validate({"id": "p", "title": "P", "groups": [
        {"name": "A", "monitors": ["api"]}, {"name": "B", "monitors": ["api", "ghost"]}]})
    with pytest.raises(PageError) as caught:
        await status_pages.upsert(pool, page, "api")
    assert caught.value.problems == [("groups.1.monitors.1.id", "no monitor 'ghost'")]
    assert await status_pages.get(pool, "p") is None


def test_a_group_lists_named_monitors_first_then_tagged_ones_each_once():
    page = Page.model_validate({"id": "p", "title": "P", "groups": [{
        "name": "G", "tags": ["web"], "latency": False,
        "monitors": ["zeta", {"id": "alpha", "latency": True, "name": "Alpha!"}, "gone"]}]})
    entries = page.groups[0].entries({"alpha": ["web"], "zeta": [], "beta": ["web"],
                                      "other": ["db"]})
    assert [(e.id, e.name, e.bar, e.latency) for e in entries] == [
        ("zeta", None, True, False), ("alpha", "Alpha!", True, True),
        ("beta", None, True, False)]
