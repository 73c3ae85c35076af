"""The status page in headless Chromium (Debian's `chromium`, driven by playwright through
its executable_path; no browser is downloaded), served by the real app on a real port over
the session's Redis, Postgres and chDB: it renders, its bars match the history the test
wrote, a status change added to the events stream shows on the open page without a reload,
it has a dark scheme and fits a 375 px phone without scrolling sideways. The screenshot goes
to the test's own directory; with VIGIL_UPDATE_SCREENSHOT=1 it replaces docs/status-page.png,
the README's (a test run leaves the tree as it found it)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright

from api.app import make_app
from engine import incidents, maintenance_store, status_pages
from engine.keys import Keys
from engine.maintenance import Window
from engine.status_pages import Page
from executors.kinds import SCHEMA
from sinks.clickhouse import COLUMNS, row
from tests.support.events import change, clear_projections, opened, publish, resolved
from tests.support.helpers import check_result, repo_root, store_monitors
from tests.support.servers import serve_app

CHROMIUM = shutil.which("chromium")
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180),
              pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package")]
DAY = 86_400_000
HOUR = 3_600_000
# Days back -> the share of down checks of each monitor (24 checks a day); a day absent has
# none, a day in MUTED ran in maintenance.
MONITORS = {"b-api": ("API", {4: 0.5, 12: 1 / 24, 30: 0.25}),
            "b-web": ("Website", {2: 1 / 24, 40: 0.125}),
            "b-db": ("Database", {}),
            "b-mail": ("Mail relay", {7: 1.0})}
MUTED = {"b-db": {20}}
NO_DATA = {"b-mail": range(60, 90)}


def tcp(monitor_id: str, name: str) -> dict[str, Any]:
    return {"id": monitor_id, "name": name, "kind": "tcp", "tags": ["browser"],
            "tcp": {"host": "127.0.0.1", "port": 9}}


def history(now: int) -> tuple[list[Any], dict[str, dict[str, str]]]:
    """90 days of hourly checks per monitor, and each day's expected title on the bar."""
    today = now - now % DAY
    results, titles = [], {}
    for monitor_id, (_, down_days) in MONITORS.items():
        titles[monitor_id] = {}
        for back in range(90):
            day = today - back * DAY
            name = datetime.fromtimestamp(day / 1000, UTC).date().isoformat()
            if back in NO_DATA.get(monitor_id, ()):
                titles[monitor_id][name] = f"{name}: no data"
                continue
            hours = [day + h * HOUR + 60_000 for h in range(24) if day + h * HOUR < now - HOUR]
            down = round(down_days.get(back, 0) * len(hours))
            muted = back in MUTED.get(monitor_id, set())
            for i, at in enumerate(hours):
                outcome = "down" if i < down else "up"
                results.append(check_result(monitor_id, at, outcome, maintenance=muted,
                                            latency_ms=40.0 + (i * 7) % 30))
            if muted or not hours:
                titles[monitor_id][name] = f"{name}: no data" + (", maintenance" if muted
                                                                 else "")
            else:
                titles[monitor_id][name] = f"{name}: {100 * (1 - down / len(hours)):.2f}% up"
    return results, titles


@pytest.fixture
async def served(r, pool, ch, clean) -> AsyncIterator[dict[str, Any]]:
    await clear_projections(pool, ch)
    await pool.execute("TRUNCATE status_pages, maintenance_windows")
    now = int(time.time() * 1000)
    await store_monitors(pool, SCHEMA.parse([tcp(m, n) for m, (n, _) in MONITORS.items()]),
                         source="api")
    results, titles = history(now)
    await ch.insert("check_results", [row(x) for x in results], COLUMNS)
    began = now - 4 * DAY - 2 * HOUR
    async with pool.acquire() as conn:
        await incidents.project(conn, [
            *(change(m, now - HOUR, "up") for m in MONITORS if m != "b-mail"),
            change("b-mail", now - 3 * HOUR, "down"),
            opened("b-mail", now - 3 * HOUR, error_kind="refused"),
            opened("b-api", began, error_kind="timeout"),
            resolved("b-api", began, began + 5 * HOUR)])
    await incidents.add_note(pool, f"b-api:{began}", "ops",
                             "A bad deploy; rolled back, and a check added to the pipeline.")
    await maintenance_store.upsert(pool, Window.model_validate({
        "id": "db-upgrade", "name": "Database upgrade to the next major version",
        "monitors": ["b-db"], "start": (datetime.now(UTC) + timedelta(days=2)).isoformat(),
        "end": (datetime.now(UTC) + timedelta(days=2, hours=2)).isoformat()}), "api")
    await status_pages.upsert(pool, Page.model_validate({
        "id": "browser", "title": "Acme Cloud status",
        "description": "Live status of the Acme Cloud services.",
        "groups": [{"name": "Core", "monitors": ["b-api", "b-web", "b-db"]},
                   {"name": "Other", "monitors": [{"id": "b-mail", "latency": False}]}]}),
        "api")
    async with serve_app(make_app(r, pool, ch, Keys(), SCHEMA)) as url:
        yield {"url": f"{url}/status/browser", "titles": titles, "now": now}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        await launched.close()


async def test_the_page_renders_its_history_and_takes_a_change_live(served, browser, r, keys,
                                                                    tmp_path):
    page = await browser.new_page(viewport={"width": 1000, "height": 900},
                                  color_scheme="light")
    await page.goto(served["url"])
    assert await page.title() == "Acme Cloud status"
    for monitor_id, titles in served["titles"].items():
        cells = await page.eval_on_selector_all(
            f'[data-monitor="{monitor_id}"] .bar i', "cells => cells.map(c => c.title)")
        assert len(cells) == 90
        assert {c.split(":")[0]: c for c in cells} == titles, monitor_id
    assert await page.text_content('[data-monitor="b-mail"] .state') == "Down"
    assert "Mail relay" in (await page.text_content("#banner") or "")
    assert "rolled back" in (await page.text_content(".history") or "")
    assert "Database upgrade" in (await page.text_content(".maintenance") or "")
    shot = (repo_root() / "docs" if os.environ.get("VIGIL_UPDATE_SCREENSHOT") == "1"
            else tmp_path) / "status-page.png"
    await page.screenshot(path=str(shot), full_page=True)

    reloads = []
    page.on("load", lambda _: reloads.append(1))
    await page.wait_for_function("() => document.body.dataset.events")
    await publish(r, keys, [change("b-web", served["now"], "down", "up"),
                            opened("b-web", served["now"], error_kind="refused")])
    await page.wait_for_selector('[data-monitor="b-web"][data-status="down"]', timeout=15_000)
    assert await page.text_content('[data-monitor="b-web"] .state') == "Down"
    await page.wait_for_selector(f'#open-incidents [data-incident="b-web:{served["now"]}"]',
                                 timeout=15_000)
    assert reloads == []


async def test_dark_and_on_a_phone(served, browser):
    light = await browser.new_page(viewport={"width": 375, "height": 800}, color_scheme="light")
    dark = await browser.new_page(viewport={"width": 375, "height": 800}, color_scheme="dark")
    shades = []
    for tab in (light, dark):
        await tab.goto(served["url"])
        shades.append(await tab.evaluate("getComputedStyle(document.body).backgroundColor"))
        # Nothing wider than the phone: no sideways scrolling.
        assert await tab.evaluate("document.documentElement.scrollWidth") <= 375
    assert shades[0] != shades[1]
    assert await dark.evaluate(
        "matchMedia('(prefers-color-scheme: dark)').matches") is True
