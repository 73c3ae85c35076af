"""Status pages (`/status/{page_id}`, and `/`), rendered on the server from the page's
definition (engine.status_pages): per monitor its confirmed status, a 90-day bar of daily
uptime, uptime over 24 h, 7 d, 30 d and 90 d, and its latency over the last 24 h as an inline
SVG; a banner for open incidents, the incident history with its notes, and the maintenance
windows on now or coming.

Every name and text on the page is someone's input and is escaped. Nothing a probe read
reaches the page unless the monitor has `public_details` (api.status.public): an incident
or a status shows the error class only.

One render is a fixed number of queries whatever the number of monitors (every query takes
all of the page's monitors at once), and its HTML is kept RENDER_TTL_S: what changes in
between reaches open pages by Server-Sent Events (api.live), so the copy may be a little old.
The ClickHouse figures (bars, uptimes, latency), most of a render's cost on a large page and
slow to change, are kept FIGURES_TTL_S.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import html
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import ValidationError

from api.errors import json_error
from api.state import CH, PG
from api.status import public
from engine import incidents, maintenance_store, rollups, status_pages, store
from engine.cache import MISS, BoundedCache
from engine.incidents import MONITOR
from engine.maintenance import Window
from engine.status_pages import Entry, Page

DAYS = 90
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
# Trailing windows of the uptime figures, longest first (their edges cut one query's periods).
WINDOWS = (("90 d", 90 * DAY_MS), ("30 d", 30 * DAY_MS), ("7 d", 7 * DAY_MS),
           ("24 h", DAY_MS))
HISTORY_INCIDENTS = 20
HISTORY_MS = 90 * DAY_MS
UPCOMING_MS = 14 * DAY_MS
RENDER_TTL_S = 5.0
RENDERS_KEPT = 256
STATIC = resources.files("api").joinpath("static")
STYLESHEET = "/static/status-page.css"
SCRIPT = "/static/status-page.js"
LABELS = {"up": "Operational", "down": "Down", "degraded": "Degraded", "unknown": "Unknown",
          "flapping": "Flapping", None: "No data yet"}
# The bar's colours by a day's uptime, best first.
FAILING = ("down", "degraded", "flapping")
SHADES = ((0.999, "u4"), (0.99, "u3"), (0.95, "u2"), (0.0, "u1"))
CHART_W, CHART_H = 300, 40
FIGURES_TTL_S = 60.0


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{100 * ratio:.2f}%"


@dataclass(frozen=True, slots=True)
class Figures:
    """What a page shows from ClickHouse, for all its monitors: the figures of whole hours and
    days, kept FIGURES_TTL_S (a render reads Postgres afresh, these a minute at most old)."""

    now_ms: int
    days: dict[str, dict[date, rollups.Tally]]
    uptimes: dict[str, list[float | None]]  # id -> uptime per WINDOWS
    latency: dict[str, list[tuple[int, float, float]]]


FIGURES: web.AppKey[BoundedCache[str, Figures]] = web.AppKey("figures", BoundedCache)


@dataclass(slots=True)
class View:
    """Everything one render of a page reads, for all its monitors at once."""

    page: Page
    now_ms: int
    groups: list[tuple[str, list[Entry]]]
    names: dict[str, str]  # id -> its name on the page
    monitors: dict[str, dict[str, Any]]  # id -> its public status row (api.status.public)
    details: set[str]  # the monitors with public_details
    confirmed: dict[str, dict[str, Any]]  # id -> its confirmed_status row (region '*')
    figures: Figures
    open_incidents: list[dict[str, Any]]
    history: list[dict[str, Any]]
    windows: list[tuple[Window, list[tuple[int, int]]]]  # with their stretches now and next

    def name(self, monitor_id: str) -> str:
        return self.names.get(monitor_id, monitor_id)

    def failure(self, monitor_id: str) -> tuple[str | None, str | None]:
        """The error class of the monitor's newest failing result, and its text where
        public() kept it."""
        row = self.monitors.get(monitor_id)
        if row is None or row["status"] in (None, "up"):
            return None, None
        return row.get("error_kind"), row.get("error")


def _uptimes(days: dict[date, rollups.Tally], last_day: rollups.Tally | None,
             today: date) -> list[float | None]:
    """Uptime over each of WINDOWS: the last 24 h from its own tally, the others the sums of
    the bar's days (today's so far included), so the figures agree with the bar."""
    out: list[float | None] = []
    for _, span in WINDOWS:
        if span == DAY_MS:
            out.append(None if last_day is None else last_day.uptime)
            continue
        first = today - timedelta(days=span // DAY_MS - 1)
        shown = [t for d, t in days.items() if d >= first]
        up, down = sum(t.up for t in shown), sum(t.down for t in shown)
        out.append(up / (up + down) if up + down else None)
    return out


async def figures(ch: Any, ids: list[str], now_ms: int) -> Figures:
    today = datetime.fromtimestamp(now_ms / 1000, UTC).date()
    days = await rollups.daily(ch, ids, today - timedelta(days=DAYS - 1), today)
    last_day = await rollups.tallies(ch, ids, now_ms - DAY_MS, now_ms)
    latency = await rollups.latency_hourly(ch, ids, now_ms - DAY_MS, now_ms)
    uptimes = {m: _uptimes(days.get(m, {}), last_day.get(m), today) for m in ids}
    return Figures(now_ms, days, uptimes, latency)


async def _windows(pool: asyncpg.Pool, shown: dict[str, list[str]], now_ms: int
                   ) -> list[tuple[Window, list[tuple[int, int]]]]:
    """The maintenance windows covering a monitor of the page, active or starting soon; one
    that no longer validates covers nothing, as for the scheduler."""
    out = []
    for row in await maintenance_store.list_all(pool):
        try:
            window = maintenance_store.window_of(row)
        except ValidationError:
            continue
        if not any(window.covers(mid, tags) for mid, tags in shown.items()):
            continue
        stretches = [(s, e) for s, e in window.upcoming(now_ms, 2) if s < now_ms + UPCOMING_MS]
        if stretches:
            out.append((window, stretches))
    return sorted(out, key=lambda w: w[1][0][0])


async def _history(pool: asyncpg.Pool, ids: set[str], now_ms: int) -> list[dict[str, Any]]:
    """The page's newest incidents with their notes (one query each, HISTORY_INCIDENTS at
    most, whatever the number of monitors)."""
    recent = [i for i in await incidents.listed(pool, since_ms=now_ms - HISTORY_MS,
                                                limit=incidents.LIST_MAX)
              if i["monitor_id"] in ids][:HISTORY_INCIDENTS]
    found = await asyncio.gather(*(incidents.one(pool, i["id"]) for i in recent))
    return [i for i in found if i is not None]


async def view(app: web.Application, page: Page) -> View:
    pool = app[PG]
    now_ms = int(time.time() * 1000)
    rows = await store.list_all(pool)
    tags = {r["id"]: list(r["tags"]) for r in rows}
    groups = [(g.name, g.entries(tags)) for g in page.groups]
    ids = sorted({e.id for _, entries in groups for e in entries})
    shown = {mid: tags[mid] for mid in ids}
    names = {r["id"]: r["name"] or r["id"] for r in rows if r["id"] in shown}
    names.update({e.id: e.name for _, entries in groups for e in entries if e.name})
    # ClickHouse's part runs beside Postgres's (its client has a thread of its own).
    counted = asyncio.ensure_future(_figures(app, page.id, ids, now_ms))
    try:
        found = [r for r in await store.status_rows(pool) if r["id"] in shown]
        confirmed = {r["monitor_id"]: r for r in await incidents.confirmed(pool, None)
                     if r["region"] == MONITOR and r["monitor_id"] in shown}
        opened = [i for i in await incidents.listed(pool, state="open",
                                                    limit=incidents.LIST_MAX)
                  if i["monitor_id"] in shown]
        history = await _history(pool, set(ids), now_ms)
        windows = await _windows(pool, shown, now_ms)
    finally:
        got = await counted
    return View(page=page, now_ms=now_ms, groups=groups, names=names,
                monitors=_worst_region([public(r) for r in found]),
                details={r["id"] for r in found if r["public_details"]}, confirmed=confirmed,
                figures=got, open_incidents=opened, history=history, windows=windows)


async def _figures(app: web.Application, page_id: str, ids: list[str], now_ms: int) -> Figures:
    cache = app[FIGURES]
    hit = cache.get(page_id)
    if hit is not MISS and hit.uptimes.keys() == set(ids):
        return hit
    found = await figures(app[CH], ids, now_ms)
    cache.put(page_id, found)
    return found


def _worst_region(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One status row per monitor: a failing region's, so its error class is the one shown."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        seen = out.get(r["id"])
        if seen is None or (seen["status"] in (None, "up") and r["status"] not in (None, "up")):
            out[r["id"]] = r
    return out


# --- HTML ---------------------------------------------------------------------------------------

def _day_cells(now_ms: int) -> list[tuple[date, str]]:
    """The bar's days, oldest first, each with its ISO date."""
    today = datetime.fromtimestamp(now_ms / 1000, UTC).date()
    return [(d, d.isoformat()) for d in (today - timedelta(days=back)
                                         for back in range(DAYS - 1, -1, -1))]


# Most days of most monitors look alike (100.00% up, or no data): a cell is made once.
@functools.lru_cache(maxsize=65_536)
def _cell(label: str, tally: rollups.Tally | None) -> str:
    ratio = None if tally is None else tally.uptime
    if ratio is None:
        shade, said = "u0", "no data"
    else:
        shade = next(c for floor, c in SHADES if ratio >= floor)
        said = f"{percent(ratio)} up"
    if tally is not None and tally.maintenance:
        shade, said = f"{shade} mt", f"{said}, maintenance"
    return f'<i class="{shade}" title="{label}: {said}"></i>'


def _bar(view: View, monitor_id: str, cells: list[tuple[date, str]]) -> str:
    """One cell per day, oldest first: its uptime's shade, grey without answers, marked when
    checks ran in maintenance; the title says the figure."""
    days = view.figures.days.get(monitor_id, {})
    return (f'<div class=bar role=img aria-label="uptime per day, last {DAYS} days">'
            + "".join(_cell(label, days.get(day)) for day, label in cells)
            + f"</div><div class=axis><span>{DAYS} days ago</span><span>today</span></div>")


def _chart(view: View, monitor_id: str) -> str:
    """p50 and p95 latency per hour over the last 24 h, as an inline SVG polyline each."""
    points = view.figures.latency.get(monitor_id, [])
    if not points:
        return "<p class=nochart>No response times in the last 24 h</p>"
    top = max(p95 for _, _, p95 in points) or 1.0
    since = view.figures.now_ms - DAY_MS

    def line(values: list[tuple[int, float]]) -> str:
        return " ".join(f"{(hour + HOUR_MS / 2 - since) / DAY_MS * CHART_W:.1f},"
                        f"{CHART_H - 2 - v / top * (CHART_H - 4):.1f}" for hour, v in values)

    last = points[-1]
    label = f"response time, last 24 h: p50 {last[1]:.0f} ms, p95 {last[2]:.0f} ms in the last hour"
    return (f'<svg class=chart viewBox="0 0 {CHART_W} {CHART_H}" preserveAspectRatio=none '
            f'role=img aria-label="{esc(label)}"><title>{esc(label)}</title>'
            f'<polyline class=p95 points="{line([(h, p) for h, _, p in points])}"/>'
            f'<polyline class=p50 points="{line([(h, p) for h, p, _ in points])}"/></svg>'
            f"<div class=axis><span>24 h ago</span><span>max {top:.0f} ms</span>"
            "<span>now</span></div>")


def _failure(kind: str | None, error: str | None) -> str:
    """What went wrong, as far as the public may see: the error class, and the probe's text
    only for a monitor with public_details (the caller passes None otherwise)."""
    said = ": ".join(p for p in (kind, error) if p)
    return f"<p class=failure>{esc(said)}</p>" if said else ""


def _monitor(view: View, entry: Entry, cells: list[tuple[date, str]]) -> str:
    confirmed = view.confirmed.get(entry.id)
    status = None if confirmed is None else confirmed["status"]
    since = "" if confirmed is None else f" since {when(confirmed['since_ms'])}"
    parts = [f'<li class=monitor data-monitor="{esc(entry.id)}" '
             f'data-status="{esc(status or "none")}"><div class=head>'
             f"<span class=name>{esc(view.name(entry.id))}</span>"
             f'<span class="state s-{esc(status or "none")}" title="{esc(since.strip())}">'
             f"{esc(LABELS.get(status, status))}</span></div>",
             _failure(*view.failure(entry.id)) if status in FAILING else ""]
    if entry.bar:
        parts.append(_bar(view, entry.id, cells))
    if entry.uptime:
        ratios = view.figures.uptimes.get(entry.id, [None] * len(WINDOWS))
        parts.append("<dl class=uptime>" + "".join(
            f"<div><dt>{label}</dt><dd>{percent(ratio)}</dd></div>"
            for (label, _), ratio in reversed(list(zip(WINDOWS, ratios, strict=True))))
            + "</dl>")
    if entry.latency:
        parts.append(_chart(view, entry.id))
    return "".join(parts) + "</li>"


def _summary(view: View) -> str:
    states = [view.confirmed.get(e.id, {}).get("status") for _, es in view.groups for e in es]
    if "down" in states:
        return "<p class='summary s-down' id=summary>Some systems are down</p>"
    if any(s in ("degraded", "flapping") for s in states):
        return "<p class='summary s-degraded' id=summary>Some systems are degraded</p>"
    if states and all(s == "up" for s in states):
        return "<p class='summary s-up' id=summary>All systems operational</p>"
    return "<p class='summary s-none' id=summary>Status not known for every system yet</p>"


def _banner(view: View) -> str:
    items = "".join(
        f'<li data-incident="{esc(i["id"])}"><strong>{esc(view.name(i["monitor_id"]))}</strong>'
        f" is having problems since {when(i['opened_ms'])}</li>" for i in view.open_incidents)
    hidden = "" if view.open_incidents else " hidden"
    return (f"<section class=banner id=banner aria-live=polite{hidden}><h2>Ongoing incident</h2>"
            f"<ul id=open-incidents>{items}</ul></section>")


def _maintenance(view: View) -> str:
    if not view.windows:
        return ""
    items = []
    for window, stretches in view.windows:
        start, end = stretches[0]
        state = "In progress" if start <= view.now_ms else "Scheduled"
        items.append(f"<li><strong>{state}:</strong> {esc(window.name or window.id)}, "
                     f"{when(start)} to {when(end)}</li>")
    return f"<section class=maintenance><h2>Maintenance</h2><ul>{''.join(items)}</ul></section>"


def _history_html(view: View) -> str:
    if not view.history:
        return ("<section class=history><h2>Past incidents</h2>"
                "<p>No incidents in the last 90 days.</p></section>")
    items = []
    for i in view.history:
        ended = ("ongoing" if i["resolved_ms"] is None
                 else f"resolved {when(i['resolved_ms'])}")
        failure = _failure(i["error_kind"],
                           i["error"] if i["monitor_id"] in view.details else None)
        notes = "".join(f"<li><time>{esc(n['created_at'][:16].replace('T', ' '))} UTC</time> "
                        f"{esc(n['text'])}</li>" for n in i["notes"])
        items.append(f"<li class=incident><h3>{esc(view.name(i['monitor_id']))}</h3>"
                     f"<p>{when(i['opened_ms'])}, {ended}</p>{failure}"
                     + (f"<ul class=notes>{notes}</ul>" if notes else "") + "</li>")
    return f"<section class=history><h2>Past incidents</h2><ul>{''.join(items)}</ul></section>"


def _document(title: str, body: str, events: str | None = None) -> str:
    live = f' data-events="{esc(events)}"' if events else ""
    script = f"<script src={SCRIPT} defer></script>" if events else ""
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width, initial-scale=1'>"
            "<meta name=color-scheme content='light dark'>"
            f"<title>{esc(title)}</title><link rel=stylesheet href={STYLESHEET}>{script}"
            f"</head><body{live}><main>{body}</main></body></html>")


def render(view: View) -> str:
    page = view.page
    cells = _day_cells(view.figures.now_ms)
    groups = "".join(
        f"<section class=group><h2>{esc(name)}</h2><ul class=monitors>"
        + "".join(_monitor(view, e, cells) for e in entries) + "</ul></section>"
        for name, entries in view.groups)
    description = f"<p class=description>{esc(page.description)}</p>" if page.description else ""
    body = (f"<header><h1>{esc(page.title)}</h1>{description}{_summary(view)}</header>"
            f"{_banner(view)}{_maintenance(view)}{groups}{_history_html(view)}"
            f"<footer>Updated {when(view.now_ms)}; changes appear here as they happen.</footer>")
    return _document(page.title, body, events=f"/status/{page.id}/events")


@dataclass(frozen=True, slots=True)
class Rendered:
    """A page's HTML, and gzipped once for every client that takes it so (a large page's
    bars shrink about fifteen times)."""

    body: bytes
    gzipped: bytes


RENDERS: web.AppKey[BoundedCache[str, Rendered]] = web.AppKey("renders", BoundedCache)


async def rendered(app: web.Application, page_id: str) -> Rendered | None:
    """The page, from the short cache or rendered now; None if there is no page."""
    cache = app[RENDERS]
    hit = cache.get(page_id)
    if hit is not MISS:
        return hit
    row = await status_pages.get(app[PG], page_id)
    if row is None:
        return None  # not kept: a page made a moment later is found at once
    body = render(await view(app, status_pages.page_of(row))).encode()
    # zlib lets go of the GIL on a large buffer: the loop serves others meanwhile.
    done = Rendered(body, await asyncio.to_thread(gzip.compress, body, 6))
    cache.put(page_id, done)
    return done


def _html(request: web.Request, page: Rendered) -> web.Response:
    headers = {"Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=page.gzipped, content_type="text/html", charset="utf-8",
                            headers=headers)
    return web.Response(body=page.body, content_type="text/html", charset="utf-8",
                        headers=headers)


async def status_page(request: web.Request) -> web.Response:
    page_id = request.match_info["page_id"]
    page = await rendered(request.app, page_id)
    if page is None:
        raise json_error(web.HTTPNotFound, f"no status page {page_id!r}")
    return _html(request, page)


async def index(request: web.Request) -> web.Response:
    """The page `default` if there is one; else a list of the pages, or how to make one."""
    page = await rendered(request.app, "default")
    if page is not None:
        return _html(request, page)
    pages = await status_pages.list_all(request.app[PG])
    if not pages:
        text = ("<h1>No status page yet</h1><p>Define one under <code>status_pages:</code> in "
                "a monitors file and run <code>vigil monitors apply -f FILE</code>, or POST it "
                "to <code>/api/v1/status-pages</code>. A page with the id <code>default</code> "
                "is shown here.</p>")
    else:
        links = "".join(f"<li><a href='/status/{esc(r['id'])}'>"
                        f"{esc(status_pages.page_of(r).title)}</a></li>" for r in pages)
        text = f"<h1>Status pages</h1><ul class=pages>{links}</ul>"
    return web.Response(text=_document("Status pages", text), content_type="text/html")


def _asset(name: str, content_type: str) -> web.Response:
    return web.Response(body=STATIC.joinpath(name).read_bytes(), content_type=content_type,
                        headers={"Cache-Control": "public, max-age=3600"})


async def stylesheet(_request: web.Request) -> web.Response:
    return _asset("status-page.css", "text/css")


async def script(_request: web.Request) -> web.Response:
    return _asset("status-page.js", "text/javascript")


def add_page_routes(app: web.Application) -> None:
    app[RENDERS] = BoundedCache(RENDERS_KEPT, RENDER_TTL_S)
    app[FIGURES] = BoundedCache(RENDERS_KEPT, FIGURES_TTL_S)
    app.router.add_get("/", index)
    app.router.add_get("/status/{page_id}", status_page)
    app.router.add_get(STYLESHEET, stylesheet)
    app.router.add_get(SCRIPT, script)
