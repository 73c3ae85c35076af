"""Badges: SVG images in the shields.io "flat" style for READMEs and dashboards, of a monitor's
confirmed status, uptime over a window, latency and certificate expiry, and of the worst
status among the monitors of a tag.

Only monitors shown publicly (on at least one status page, engine.status_pages) have badges.
Any other id, existing or not, gets the same 404 "not found" badge, byte for byte, so a
badge URL never tells whether a private monitor exists. A certificate's expiry is read from
the target's own certificate, so, as any probe detail, it is shown only for monitors with
`public_details` (Uptime Kuma likewise shows certificate expiry only where a page asks).

A badge is fetched by every viewer of every README it is in: what it shows is kept in
process for as long as a client may cache it (FRESH_S), so a hot badge costs no query, and
the set of shown monitors for SHOWN_S, so ids that are not shown cost none either. While
Postgres, Redis or ClickHouse is away, a badge says what it said last (one warning for the
outage, not a traceback per viewer).
"""

from __future__ import annotations

import hashlib
import html
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from api.errors import invalid
from api.state import CH, PG, REDIS, SHARDS
from engine import incidents, rollups, status_pages, store
from engine.cache import MISS, BoundedCache
from engine.monitors import MAX_TAG_LENGTH
from engine.service import OUTAGES, Outage

Kind = Literal["status", "uptime", "latency", "cert", "tag"]
WINDOWS = {"1h": 3_600_000, "24h": 86_400_000, "7d": 7 * 86_400_000,
           "30d": 30 * 86_400_000, "90d": 90 * 86_400_000}
DEFAULT_WINDOW = "24h"
LATENCY_WINDOW_MS = 86_400_000
LABEL_MAX = 40
# How long a client and this process may keep each badge: a status should change soon
# after the monitor's does; figures over hours and days hardly move within minutes.
FRESH_S: dict[Kind, int] = {"status": 30, "tag": 30, "uptime": 300, "latency": 300,
                            "cert": 3600}
NOT_FOUND_FRESH_S = 60
# While a store is away: what a badge said last, or that it is unavailable, briefly.
RETRY_S = 10
SHOWN_S = 30
CACHED_MAX = 10_000
# A certificate not seen for a week is no longer known: the monitor stopped reporting it.
CERT_SQL = """
SELECT toUnixTimestamp(assumeNotNull(tls_expiry)) FROM check_results FINAL
WHERE monitor_id = {monitor_id:String} AND tls_expiry IS NOT NULL
  AND scheduled >= now64(3) - toIntervalDay(7)
ORDER BY scheduled DESC LIMIT 1
"""
# shields.io's named colours.
BRIGHTGREEN, GREEN, YELLOWGREEN, YELLOW = "#4c1", "#97ca00", "#a4a61d", "#dfb317"
ORANGE, RED, BLUE, LIGHTGREY, GREY = "#fe7d37", "#e05d44", "#007ec6", "#9f9f9f", "#555"
STATUS_COLOURS = {"up": BRIGHTGREEN, "degraded": YELLOW, "flapping": ORANGE, "down": RED,
                  "unknown": LIGHTGREY, "maintenance": BLUE, "paused": LIGHTGREY}
# A tag's status is its worst monitor's; a paused monitor checks nothing, so it counts only
# when every monitor of the tag is paused.
WORST_FIRST = ("down", "flapping", "degraded", "unknown", "maintenance", "up", "paused")
# Verdana at 11 px, each printable ASCII character's advance in px: the metrics shields.io
# measures its badges with, so a badge is as wide as its text in the font it names.
_ASCII = "".join(map(chr, range(32, 127)))
_WIDTHS = dict(zip(_ASCII, (
    3.867, 4.329, 5.049, 9.002, 6.993, 11.838, 7.992, 2.954, 4.995, 4.995, 6.993, 9.002,
    4.001, 4.995, 4.001, 4.995, *(6.993,) * 10, 4.995, 4.995, 9.002, 9.002, 9.002, 6.000,
    11.000, 7.520, 7.541, 7.681, 8.476, 6.956, 6.322, 8.529, 8.266, 4.630, 5.000, 7.622,
    6.123, 9.271, 8.229, 8.658, 6.633, 8.658, 7.648, 7.520, 6.778, 8.051, 7.520, 10.876,
    7.536, 6.768, 7.536, 4.995, 4.995, 4.995, 9.002, 6.993, 6.993, 6.606, 6.854, 5.731,
    6.854, 6.553, 3.867, 6.854, 6.961, 3.019, 3.787, 6.510, 3.019, 10.699, 6.961, 6.676,
    6.854, 6.854, 4.694, 5.731, 4.334, 6.961, 6.510, 9.002, 6.510, 6.510, 5.779, 6.982,
    4.995, 6.982, 9.002), strict=True))
# Any other character (accents, CJK, emoji) is taken as one em: wide enough for most, so
# text is never clipped.
_EM = 11.0
PADDING = 5


@dataclass(frozen=True, slots=True)
class Reading:
    """What a badge says on its right, in which colour."""

    message: str
    colour: str


NOT_FOUND = Reading("not found", LIGHTGREY)
UNAVAILABLE = Reading("unavailable", LIGHTGREY)


def text_width(text: str) -> int:
    """The text's width in px, rounded up to odd as shields does (the text's centre then falls
    on the pixel grid)."""
    width = math.ceil(sum(_WIDTHS.get(c, _EM) for c in text))
    return width if width % 2 else width + 1


def svg(label: str, reading: Reading) -> str:
    """A flat badge: label on grey, message on its colour, text shadowed; every text
    escaped. Coordinates in tenths of a px (font-size 110, scale .1), as shields draws them."""
    lw, mw = text_width(label), text_width(reading.message)
    left, right = lw + 2 * PADDING, mw + 2 * PADDING
    width = left + right
    title = html.escape(f"{label}: {reading.message}")
    lab, msg = html.escape(label), html.escape(reading.message)
    lx, mx = 10 * (PADDING + lw / 2), 10 * (left + PADDING + mw / 2)

    def text(x: float, length: int, value: str) -> str:
        return (f'<text aria-hidden="true" x="{x:g}" y="150" fill="#010101" fill-opacity=".3" '
                f'transform="scale(.1)" textLength="{10 * length}">{value}</text>'
                f'<text x="{x:g}" y="140" transform="scale(.1)" fill="#fff" '
                f'textLength="{10 * length}">{value}</text>')

    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" '
            f'aria-label="{title}"><title>{title}</title>'
            '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" '
            'stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
            f'<clipPath id="r"><rect width="{width}" height="20" rx="3" fill="#fff"/>'
            f'</clipPath><g clip-path="url(#r)"><rect width="{left}" height="20" '
            f'fill="{GREY}"/><rect x="{left}" width="{right}" height="20" '
            f'fill="{reading.colour}"/><rect width="{width}" height="20" fill="url(#s)"/></g>'
            '<g fill="#fff" text-anchor="middle" '
            'font-family="Verdana,Geneva,DejaVu Sans,sans-serif" '
            'text-rendering="geometricPrecision" font-size="110">'
            f"{text(lx, lw, lab)}{text(mx, mw, msg)}</g></svg>")


# --- what each badge says ------------------------------------------------------------------

def percent(uptime: float) -> str:
    """Truncated, never rounded up: 99.996 % is not 100 %."""
    if uptime >= 1:
        return "100%"
    return f"{int(uptime * 10_000) / 100:.2f}".rstrip("0").rstrip(".") + "%"


def uptime_reading(uptime: float | None) -> Reading:
    if uptime is None:
        return Reading("no data", LIGHTGREY)
    colour = next(c for floor, c in ((0.999, BRIGHTGREEN), (0.99, GREEN), (0.97, YELLOWGREEN),
                                     (0.95, YELLOW), (0.90, ORANGE), (0.0, RED))
                  if uptime >= floor)
    return Reading(percent(uptime), colour)


def latency_reading(ms: float | None) -> Reading:
    if ms is None:
        return Reading("no data", LIGHTGREY)
    shown = f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"
    colour = next(c for ceiling, c in ((200, BRIGHTGREEN), (500, GREEN), (1000, YELLOWGREEN),
                                       (2000, YELLOW), (5000, ORANGE), (math.inf, RED))
                  if ms < ceiling)
    return Reading(shown, colour)


def cert_reading(expiry_s: int | None, now_ms: int) -> Reading:
    if expiry_s is None:
        return Reading("no certificate", LIGHTGREY)
    days = (expiry_s * 1000 - now_ms) // 86_400_000
    if days < 0:
        return Reading("expired", RED)
    colour = RED if days < 7 else ORANGE if days < 14 else YELLOW if days < 30 else BRIGHTGREEN
    return Reading("1 day" if days == 1 else f"{days} days", colour)


def status_reading(status: str) -> Reading:
    return Reading(status, STATUS_COLOURS.get(status, LIGHTGREY))


def worst(statuses: list[str]) -> str:
    return min(statuses, key=lambda s: WORST_FIRST.index(s) if s in WORST_FIRST else 0)


# --- reading the stores ----------------------------------------------------------------------

async def statuses(request: web.Request, monitors: dict[str, bool]) -> dict[str, str]:
    """Monitor id (-> enabled) -> the status a badge shows: paused, in maintenance now (the
    hash the scheduler keeps equal to the windows in effect), else the confirmed status over
    its regions (the evaluator's; unknown before its first)."""
    ids = sorted(monitors)
    app = request.app
    in_window: dict[str, bytes | None] = {}
    for keys, some in app[SHARDS].split(ids).items():
        found: list[bytes | None] = await app[REDIS].hmget(  # type: ignore[assignment]
            keys.maintenance, some)
        in_window.update(zip(some, found, strict=True))
    # A tag's monitors in one statement: every monitor's row, kept by the cache after.
    one = ids[0] if len(ids) == 1 else None
    confirmed = {row["monitor_id"]: row["status"]
                 for row in await incidents.confirmed(app[PG], one)
                 if row["region"] == incidents.MONITOR}
    return {mid: "paused" if not monitors[mid] else "maintenance" if in_window[mid] is not None
            else confirmed.get(mid, "unknown") for mid in ids}


class Badges:
    """The per-process caches: what each badge says, fresh and as last read, and which
    monitors are shown; and the outage of the stores they are read from."""

    def __init__(self) -> None:
        self.readings: dict[Kind, BoundedCache[tuple[str, str], Reading | None]] = {
            kind: BoundedCache(CACHED_MAX, fresh) for kind, fresh in FRESH_S.items()}
        self.last: BoundedCache[tuple[Kind, str, str], Reading | None] = BoundedCache(
            CACHED_MAX)
        self._shown: BoundedCache[str, frozenset[str]] = BoundedCache(1, SHOWN_S)
        self.outage = Outage("reading badges", component="api.badges")

    async def shown(self, request: web.Request) -> frozenset[str]:
        async def load() -> frozenset[str]:
            return frozenset(await status_pages.shown_monitors(request.app[PG]))

        return await self._shown.get_or_load("shown", load)

    async def reading(self, request: web.Request, kind: Kind, subject: str, window: str,
                      read: Reader) -> Reading | None:
        """What the badge says; None: not found. Raises what an unreachable store raises."""
        if kind == "tag":
            # Its reader looks for its shown monitors itself; a longer text is no tag, and
            # is not kept (any URL could fill the cache with long keys otherwise).
            if len(subject) > MAX_TAG_LENGTH:
                return None
        elif subject not in await self.shown(request):
            return None
        reading = await self.readings[kind].get_or_load(
            (subject, window), lambda: read(request, subject, window))
        self.last.put((kind, subject, window), reading)
        return reading


BADGES: web.AppKey[Badges] = web.AppKey("badges", Badges)


async def _status(request: web.Request, monitor_id: str, _window: str) -> Reading | None:
    row = await store.get(request.app[PG], monitor_id)
    if row is None:
        return None
    return status_reading((await statuses(request, {monitor_id: row["enabled"]}))[monitor_id])


async def _tag(request: web.Request, tag: str, _window: str) -> Reading | None:
    shown = await request.app[BADGES].shown(request)
    tagged = {row["id"]: row["enabled"] for row in await store.list_all(request.app[PG], tag)
              if row["id"] in shown}
    if not tagged:
        return None
    return status_reading(worst(list((await statuses(request, tagged)).values())))


async def _uptime(request: web.Request, monitor_id: str, window: str) -> Reading:
    now = int(time.time() * 1000)
    tally = (await rollups.tallies(request.app[CH], [monitor_id], now - WINDOWS[window],
                                   now)).get(monitor_id)
    return uptime_reading(None if tally is None else tally.uptime)


async def _latency(request: web.Request, monitor_id: str, _window: str) -> Reading:
    """The median latency of the answered checks (up, degraded) of the last 24 hours, from
    the rollups' histograms (within 1 %)."""
    now = int(time.time() * 1000)
    [day] = (await rollups.summaries(request.app[CH], [monitor_id],
                                     [now - LATENCY_WINDOW_MS, now]))[monitor_id]
    return latency_reading(day.quantile(0.5))


async def _cert(request: web.Request, monitor_id: str, _window: str) -> Reading | None:
    row = await store.get(request.app[PG], monitor_id)
    if row is None or not row["public_details"]:
        return None
    rows = await request.app[CH].rows(CERT_SQL, {"monitor_id": monitor_id})
    return cert_reading(rows[0][0] if rows else None, int(time.time() * 1000))


Reader = Callable[[web.Request, str, str], Awaitable[Reading | None]]


# --- answers ---------------------------------------------------------------------------------

def _label(request: web.Request, default: str) -> str:
    label = request.query.get("label")
    if label is None:
        return default
    if not 1 <= len(label) <= LABEL_MAX:
        raise invalid("query", "label", f"expected 1 to {LABEL_MAX} characters")
    if not label.isprintable():
        raise invalid("query", "label", "expected printable text (no control characters)")
    return label


def _window(request: web.Request) -> str:
    window = request.query.get("window", DEFAULT_WINDOW)
    if window not in WINDOWS:
        raise invalid("query", "window", f"expected one of {', '.join(WINDOWS)}")
    return window


def _answer(request: web.Request, body: str, status: int, fresh_s: int) -> web.Response:
    """The badge with its cache headers and policy; 304 when the client holds this one."""
    etag = hashlib.sha256(body.encode()).hexdigest()[:20]
    headers = {"Cache-Control": f"public, max-age={fresh_s}",
               # An SVG opened by itself is a document a browser runs: this one needs nothing
               # loaded and no script (its look is all attributes, no style).
               "Content-Security-Policy": "default-src 'none'"}
    held = request.if_none_match or ()
    if any(tag.value in (etag, "*") for tag in held):
        response = web.Response(status=304, headers=headers)
    else:
        response = web.Response(text=body, status=status, content_type="image/svg+xml",
                                headers=headers)
    response.etag = etag
    return response


async def _badge(request: web.Request, kind: Kind, subject: str, default_label: str,
                 read: Reader, window: str = "") -> web.Response:
    label = _label(request, default_label)
    badges = request.app[BADGES]
    fresh_s: int | None = None
    try:
        reading = await badges.reading(request, kind, subject, window, read)
        badges.outage.ok()
    except OUTAGES as exc:
        # Postgres, Redis or ClickHouse away: one warning for the whole outage, and what
        # this badge said last rather than a broken image in every README, for a short while.
        badges.outage.failed(exc)
        held = badges.last.get((kind, subject, window))
        if held is MISS:
            return _answer(request, svg(label, UNAVAILABLE), 503, RETRY_S)
        reading, fresh_s = held, RETRY_S
    if reading is None:
        return _answer(request, svg(label, NOT_FOUND), 404, fresh_s or NOT_FOUND_FRESH_S)
    return _answer(request, svg(label, reading), 200, fresh_s or FRESH_S[kind])


async def status_badge(request: web.Request) -> web.Response:
    return await _badge(request, "status", request.match_info["monitor_id"], "status", _status)


async def uptime_badge(request: web.Request) -> web.Response:
    window = _window(request)
    return await _badge(request, "uptime", request.match_info["monitor_id"],
                        f"uptime {window}", _uptime, window)


async def latency_badge(request: web.Request) -> web.Response:
    return await _badge(request, "latency", request.match_info["monitor_id"], "p50 24h",
                        _latency)


async def cert_badge(request: web.Request) -> web.Response:
    return await _badge(request, "cert", request.match_info["monitor_id"], "certificate",
                        _cert)


async def tag_badge(request: web.Request) -> web.Response:
    return await _badge(request, "tag", request.match_info["tag"], "status", _tag)


def add_badge_routes(app: web.Application) -> None:
    app[BADGES] = Badges()
    app.router.add_get("/badge/{monitor_id}/status.svg", status_badge)
    app.router.add_get("/badge/{monitor_id}/uptime.svg", uptime_badge)
    app.router.add_get("/badge/{monitor_id}/latency.svg", latency_badge)
    app.router.add_get("/badge/{monitor_id}/cert.svg", cert_badge)
    app.router.add_get("/badge/tag/{tag}/status.svg", tag_badge)
