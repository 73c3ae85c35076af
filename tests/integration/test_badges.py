"""Badges (issue 11 item 2) on the real app, Postgres, chDB and Redis: each SVG parses and says
what the test wrote (the confirmed status, uptime and latency from rows inserted into
check_results, certificate days), only for monitors on a status page, with the same 404 for a
private monitor and a missing one; window and label checked, cache headers, ETag and 304."""

from __future__ import annotations

import asyncio
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import pytest
from structlog.testing import capture_logs

from api.badges import (
    BADGES,
    BRIGHTGREEN,
    FRESH_S,
    LABEL_MAX,
    RED,
    RETRY_S,
    Reading,
    cert_reading,
    latency_reading,
    percent,
    svg,
    worst,
)
from engine import status_pages
from engine.connections import redis_client
from engine.events import Outcome
from engine.status_pages import Page
from executors.kinds import SCHEMA
from sinks.clickhouse import COLUMNS, row
from tests.support.helpers import check_result, free_port, store_monitors, wait_for
from tests.support.servers import api_client
from vigil.embedded import RedisServer

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = "<script>alert(1)</script>&\"'"


@dataclass(frozen=True)
class Ids:
    """Monitor ids of one test: new ones each time, so rows the rollups' views kept from an
    earlier test (check_results is emptied between tests, the rollups are not) are not theirs."""

    web: str
    db: str
    paused: str
    private: str


@pytest.fixture
async def ids(pool, clean) -> Ids:
    await pool.execute("TRUNCATE status_pages, confirmed_status")
    suffix = uuid.uuid4().hex[:8]
    made = Ids(*(f"{name}-{suffix}" for name in ("web", "db", "paused", "private")))
    await store_monitors(pool, SCHEMA.parse([
        {"id": made.web, "kind": "http", "interval": "10s", "tags": ["prod"],
         "public_details": True, "http": {"url": "https://127.0.0.1:9/"}},
        {"id": made.db, "kind": "tcp", "interval": "10s", "tags": ["prod"],
         "tcp": {"host": "127.0.0.1", "port": 9}},
        {"id": made.paused, "kind": "tcp", "interval": "10s", "enabled": False,
         "tcp": {"host": "127.0.0.1", "port": 9}},
        # Not on any page, though it has the page's tag's neighbours' tag.
        {"id": made.private, "kind": "http", "interval": "10s", "tags": ["prod", "hidden"],
         "public_details": True, "http": {"url": "https://127.0.0.1:9/"}},
    ]), source="api")
    await status_pages.upsert(pool, Page.model_validate({
        "id": "main", "title": "Main", "groups": [
            {"name": "services", "monitors": [made.web, made.db, made.paused]}]}), "api")
    return made


async def confirm(pool, monitor_id: str, status: str) -> None:
    await pool.execute(
        "INSERT INTO confirmed_status (monitor_id, region, status, since_ms, event_id) "
        "VALUES ($1, '*', $2, 1, $3)", monitor_id, status, f"{monitor_id}:{status}")


async def results(ch, monitor_id: str, outcomes: list[Outcome], first: int = 0,
                  **fields: Any) -> None:
    """One result per outcome, a second apart, the `first`-th second back from a minute ago
    on (another call with another `first` writes other checks)."""
    now = int(time.time() * 1000) - 60_000
    await ch.insert("check_results", [row(check_result(monitor_id, now - (first + i) * 1000,
                                                       outcome, **fields))
                                      for i, outcome in enumerate(outcomes)], COLUMNS)


def said(body: str) -> tuple[str, list[str]]:
    """The badge's title and its texts (each drawn twice: shadow, then text)."""
    root = ET.fromstring(body)
    assert root.tag == f"{SVG}svg"
    title = root.find(f"{SVG}title")
    assert title is not None
    return title.text or "", [t.text or "" for t in root.iter(f"{SVG}text")]


async def badge(client, path: str, **params: str) -> tuple[int, str, Any]:
    resp = await client.get(path, params=params)
    return resp.status, await resp.text(), resp.headers


async def test_the_status_badge_says_the_confirmed_status(client, pool, r, keys, ids):
    await confirm(pool, ids.web, "down")
    await confirm(pool, ids.paused, "up")  # paused since: it checks nothing now
    await confirm(pool, ids.db, "up")
    await r.hset(keys.maintenance, ids.db, f"mute:{int(time.time() * 1000) + 600_000}")
    status, body, headers = await badge(client, f"/badge/{ids.web}/status.svg")
    assert status == 200
    assert said(body) == ("status: down", ["status", "status", "down", "down"])
    assert 'fill="#e05d44"' in body  # red
    assert headers["Content-Type"] == "image/svg+xml; charset=utf-8"
    assert headers["Cache-Control"] == f"public, max-age={FRESH_S['status']}"
    assert headers["Content-Security-Policy"] == "default-src 'none'"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert said((await badge(client, f"/badge/{ids.paused}/status.svg"))[1])[0] == (
        "status: paused")
    assert said((await badge(client, f"/badge/{ids.db}/status.svg"))[1])[0] == (
        "status: maintenance")
    await pool.execute("DELETE FROM confirmed_status")
    await r.delete(keys.maintenance)
    # What it showed stays for as long as a client may keep it: no query per request.
    assert said((await badge(client, f"/badge/{ids.web}/status.svg"))[1])[0] == "status: down"


async def test_before_its_first_confirmed_status_a_monitor_is_unknown(client, ids):
    assert said((await badge(client, f"/badge/{ids.web}/status.svg"))[1])[0] == (
        "status: unknown")


async def test_the_tag_badge_is_the_worst_of_its_shown_monitors(client, pool, ids):
    await confirm(pool, ids.web, "up")
    await confirm(pool, ids.db, "degraded")
    await confirm(pool, ids.private, "down")  # tagged prod, but on no page: not counted
    status, body, _ = await badge(client, "/badge/tag/prod/status.svg")
    assert (status, said(body)[0]) == (200, "status: degraded")
    missing = await badge(client, "/badge/tag/nothing/status.svg")
    hidden = await badge(client, "/badge/tag/hidden/status.svg")  # its only monitor: private
    assert missing[0] == hidden[0] == 404
    assert missing[1] == hidden[1]
    assert said(missing[1])[0] == "status: not found"
    # Longer than any tag: the same answer, and nothing kept for it.
    kept = len(client.app[BADGES].readings["tag"])
    assert (await badge(client, f"/badge/tag/{'x' * 65}/status.svg"))[1] == missing[1]
    assert len(client.app[BADGES].readings["tag"]) == kept


async def test_uptime_from_the_rows_written_over_the_window_asked(client, ch, ids):
    await results(ch, ids.web, ["up"] * 6 + ["degraded", "down", "error", "expired"])
    status, body, headers = await badge(client, f"/badge/{ids.web}/uptime.svg", window="30d")
    assert status == 200
    # up and degraded answered, down did not; error and expired are Vigil's, not counted.
    assert said(body)[0] == "uptime 30d: 87.5%"
    assert headers["Cache-Control"] == f"public, max-age={FRESH_S['uptime']}"
    assert said((await badge(client, f"/badge/{ids.web}/uptime.svg"))[1])[0] == (
        "uptime 24h: 87.5%")
    assert said((await badge(client, f"/badge/{ids.db}/uptime.svg", window="1h"))[1])[0] == (
        "uptime 1h: no data")
    # Cached: a viewer more costs no ClickHouse query, so rows written since do not show yet.
    await results(ch, ids.web, ["down"] * 8, first=10)
    assert said((await badge(client, f"/badge/{ids.web}/uptime.svg", window="30d"))[1])[0] == (
        "uptime 30d: 87.5%")
    assert said((await badge(client, f"/badge/{ids.web}/uptime.svg", window="7d"))[1])[0] == (
        "uptime 7d: 43.75%")


@pytest.mark.parametrize("window", ["2d", "30D", "", "24h "])
async def test_a_window_not_offered_is_a_clear_error(client, ids, window):
    resp = await client.get(f"/badge/{ids.web}/uptime.svg", params={"window": window})
    assert (resp.status, resp.content_type) == (422, "application/json")
    [error] = (await resp.json())["errors"]
    assert error["field"] == "window"
    assert "1h, 24h, 7d, 30d, 90d" in error["message"]


async def test_latency_says_which_figure_and_what_was_measured(client, ch, ids):
    await results(ch, ids.web, ["up"] * 3, latency_ms=40.0)
    await results(ch, ids.web, ["up"], first=3, latency_ms=10.0)
    await results(ch, ids.web, ["degraded"], first=4, latency_ms=4_000.0)
    await results(ch, ids.web, ["down"] * 3, first=5, latency_ms=9_000.0)  # not answers
    status, body, _ = await badge(client, f"/badge/{ids.web}/latency.svg")
    # The median of 10, 40, 40, 40, 4000 (their mean would be 826).
    assert (status, said(body)[0]) == (200, "p50 24h: 40 ms")
    assert said((await badge(client, f"/badge/{ids.db}/latency.svg"))[1])[0] == (
        "p50 24h: no data")


async def test_the_certificate_badge_counts_the_days_left(client, ch, ids):
    expiry = int(time.time() * 1000) + 20 * 86_400_000 + 3_600_000
    await results(ch, ids.web, ["up"], tls_expiry_ms=expiry)
    status, body, headers = await badge(client, f"/badge/{ids.web}/cert.svg")
    assert (status, said(body)[0]) == (200, "certificate: 20 days")
    assert 'fill="#dfb317"' in body  # yellow: under 30 days
    assert headers["Cache-Control"] == f"public, max-age={FRESH_S['cert']}"


async def test_a_shown_monitor_without_a_certificate_says_so(client, ids, pool):
    await pool.execute("UPDATE monitors SET public_details = true WHERE id = $1", ids.db)
    assert said((await badge(client, f"/badge/{ids.db}/cert.svg"))[1])[0] == (
        "certificate: no certificate")


@pytest.mark.parametrize("kind", ["status", "uptime", "latency", "cert"])
async def test_a_private_monitor_and_a_missing_one_get_the_same_answer(client, pool, ch, ids,
                                                                      kind):
    await confirm(pool, ids.private, "up")
    await results(ch, ids.private, ["up"], latency_ms=5.0,
                  tls_expiry_ms=int(time.time() * 1000) + 86_400_000)
    private = await badge(client, f"/badge/{ids.private}/{kind}.svg")
    missing = await badge(client, f"/badge/no-such-monitor/{kind}.svg")
    assert private[0] == missing[0] == 404
    assert private[1] == missing[1]
    assert {k: private[2][k] for k in ("Content-Type", "Cache-Control", "ETag")} == {
        k: missing[2][k] for k in ("Content-Type", "Cache-Control", "ETag")}
    assert said(private[1])[1][2] == "not found"


async def test_a_certificate_is_a_probe_detail(client, ch, ids):
    """db is on the page but does not show its probe details: its certificate's expiry is
    what its target sent, so it has no certificate badge, as if it did not exist."""
    await results(ch, ids.db, ["up"], tls_expiry_ms=int(time.time() * 1000) + 86_400_000)
    shown = await badge(client, f"/badge/{ids.db}/cert.svg")
    missing = await badge(client, "/badge/no-such-monitor/cert.svg")
    assert (shown[0], shown[1]) == (missing[0], missing[1])


async def test_etag_and_not_modified(client, pool, ids):
    await confirm(pool, ids.web, "up")
    first = await client.get(f"/badge/{ids.web}/status.svg")
    etag = first.headers["ETag"]
    again = await client.get(f"/badge/{ids.web}/status.svg", headers={"If-None-Match": etag})
    assert again.status == 304
    assert await again.read() == b""
    assert again.headers["ETag"] == etag
    assert again.headers["Cache-Control"] == first.headers["Cache-Control"]
    other = await client.get(f"/badge/{ids.web}/status.svg", headers={"If-None-Match": '"x"'})
    assert other.status == 200
    # Another label is another image, with its own tag.
    relabelled = await client.get(f"/badge/{ids.web}/status.svg", params={"label": "api"},
                                  headers={"If-None-Match": etag})
    assert relabelled.status == 200
    assert relabelled.headers["ETag"] != etag


async def test_a_hostile_label_is_escaped(client, pool, ids):
    await confirm(pool, ids.web, "up")
    status, body, _ = await badge(client, f"/badge/{ids.web}/status.svg", label=HOSTILE)
    assert status == 200
    assert "<script" not in body
    assert said(body) == (f"{HOSTILE}: up", [HOSTILE, HOSTILE, "up", "up"])
    # The not found badge writes the label too.
    status, body, _ = await badge(client, "/badge/nope/status.svg", label=HOSTILE)
    assert (status, said(body)[0]) == (404, f"{HOSTILE}: not found")


@pytest.mark.parametrize(("label", "problem"), [
    ("x" * (LABEL_MAX + 1), f"1 to {LABEL_MAX} characters"), ("", f"1 to {LABEL_MAX}"),
    ("a\x1bb", "printable"), ("a\nb", "printable")])
async def test_a_label_too_long_or_not_printable_is_refused(client, ids, label, problem):
    resp = await client.get(f"/badge/{ids.web}/status.svg", params={"label": label})
    assert resp.status == 422
    [error] = (await resp.json())["errors"]
    assert error["field"] == "label"
    assert problem in error["message"]


async def test_a_store_away_gets_what_the_badge_said_last(pool, ch, ids, tmp_path):
    """Redis stops: a badge read before says it again (briefly cached), one never read is
    `unavailable` (503), one warning for the outage; Redis back, badges work again with no
    restart."""
    server = RedisServer(tmp_path, port=free_port())
    await asyncio.to_thread(server.start)
    away = redis_client(server.url)
    try:
        await confirm(pool, ids.web, "up")
        async with api_client(away, pool, ch) as client:
            assert said((await badge(client, f"/badge/{ids.web}/status.svg"))[1])[0] == (
                "status: up")
            await asyncio.to_thread(server.stop)
            client.app[BADGES].readings["status"].clear()  # as if their time had run out
            with capture_logs() as logs:
                for _ in range(3):
                    status, body, headers = await badge(client, f"/badge/{ids.web}/status.svg")
                    assert (status, said(body)[0]) == (200, "status: up")
                    assert headers["Cache-Control"] == f"public, max-age={RETRY_S}"
                status, body, _ = await badge(client, f"/badge/{ids.db}/status.svg")
                assert (status, said(body)[0]) == (503, "status: unavailable")
            assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
                "reading badges failed; retrying until it works"]
            await asyncio.to_thread(server.start)

            async def back() -> bool:
                return (await badge(client, f"/badge/{ids.db}/status.svg"))[0] == 200

            await wait_for(back)
            assert said((await badge(client, f"/badge/{ids.db}/status.svg"))[1])[0] == (
                "status: unknown")
    finally:
        await away.aclose()
        await asyncio.to_thread(server.stop)


def test_widths_follow_the_text():
    """The text's width in Verdana 11 px, rounded up to odd, and 5 px either side; any
    script makes an SVG that parses."""
    def width(label: str) -> int:
        return int(ET.fromstring(svg(label, Reading("up", BRIGHTGREEN))).get("width") or 0)

    assert width("i") < width("m") < width("mm") < width("日本日本")
    assert width("status") == (35 + 10) + (15 + 10)  # "status" 34.9 px, "up" 13.6 px


def test_figures_as_a_badge_writes_them():
    assert [percent(u) for u in (1.0, 0.99996, 0.995, 0.5, 0.0)] == [
        "100%", "99.99%", "99.5%", "50%", "0%"]
    assert [latency_reading(ms).message for ms in (4.25, 40.4, 999.4, 1234.0)] == [
        "4.2 ms", "40 ms", "999 ms", "1.23 s"]
    assert latency_reading(6_000).colour == RED
    now_s, day_s = 1_000 * 86_400, 86_400
    assert [cert_reading(now_s + left_s, now_s * 1000).message
            for left_s in (-1, 0, day_s, 45 * day_s)] == ["expired", "0 days", "1 day", "45 days"]
    assert worst(["up", "paused", "maintenance"]) == "maintenance"
    assert worst(["paused", "paused"]) == "paused"
    assert worst(["up", "flapping", "degraded"]) == "flapping"
