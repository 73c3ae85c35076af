"""`vigil report --from --to [--by] [--tag] [--format csv|json|md]`: every monitor's SLA per
period and in total (engine.rollups.fleet), as `GET /api/v1/sla` answers it.

Next to a running `vigil up` the figures come from its API: its chDB admits no other process,
so this asks the process that holds it, with a read token made for the one request (it
expires in minutes and is revoked after). With a ClickHouse URL (flag or variable) the report
reads ClickHouse and Postgres itself.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from api import tokens
from engine import rollups
from engine.clickhouse import ClickHouse
from engine.connections import postgres_pool
from engine.settings import Settings
from vigil.admin import CommandError
from vigil.embedded import servers_of

FORMATS = ("csv", "json", "md")
DEFAULT_API = "http://127.0.0.1:8080"
TOKEN_NAME = "vigil-report"
TOKEN_EXPIRY_MS = 10 * 60_000
CSV_COLUMNS = ("monitor_id", "name", "period", "from", "to", "uptime_by_time_percent",
               "uptime_by_checks_percent", "downtime_minutes", "not_checked_minutes",
               "untracked_minutes", "checks_up", "checks_down", "checks_degraded",
               "checks_not_checked", "maintenance_checks_excluded", "maintenance_minutes",
               "incidents", "mttr_minutes", "latency_p50_ms", "latency_p95_ms",
               "latency_p99_ms")


def add_parser(sub: argparse._SubParsersAction,  # type: ignore[type-arg]
               common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("report", parents=[common],
                       help="SLA per period and in total: uptime by time and by checks, "
                            "downtime, incidents, MTTR, latency")
    p.add_argument("--from", dest="since", required=True,
                   help="ISO 8601 date or time (UTC unless it says otherwise)")
    p.add_argument("--to", dest="until", required=True,
                   help="ISO 8601 date or time; a date takes in that whole day")
    p.add_argument("--by", choices=rollups.PERIODS, default="month",
                   help="period (UTC days, ISO weeks, months; default month)")
    p.add_argument("--tag", help="only the monitors with this tag")
    p.add_argument("--format", choices=FORMATS, default="md")
    p.add_argument("--api-url",
                   help="the running vigil up's API (default: where it said it listens, "
                        f"else {DEFAULT_API})")


def _range(args: argparse.Namespace) -> tuple[int, int]:
    bounds = []
    for flag, text, end in (("--from", args.since, False), ("--to", args.until, True)):
        try:
            bounds.append(rollups.moment_ms(text, end=end))
        except ValueError as exc:
            raise CommandError(f"{flag}: {exc}") from None
    try:
        rollups.checked_range(bounds[0], bounds[1])
    except ValueError as exc:
        raise CommandError(f"--to: {exc}") from None
    return bounds[0], bounds[1]


def beside_up(args: argparse.Namespace) -> bool:
    """Whether a `vigil up` holds this data directory's chDB and no other ClickHouse is
    named."""
    named = args.clickhouse_url or os.environ.get("VIGIL_CLICKHOUSE_URL")
    return not named and bool(servers_of(Path(args.data_dir)))


async def _from_api(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    pool = await postgres_pool(settings.postgres_dsn)
    name = f"{TOKEN_NAME}-{os.getpid()}-{time.time_ns()}"
    try:
        token = await tokens.create(pool, name, "read", TOKEN_EXPIRY_MS)
        params = {"from": args.since, "to": args.until, "by": args.by}
        if args.tag:
            params["tag"] = args.tag
        where = args.api_url or servers_of(Path(args.data_dir)).get("api_url", DEFAULT_API)
        url = where.rstrip("/") + "/api/v1/sla"
        try:
            async with aiohttp.ClientSession() as session, session.get(
                    url, params=params, headers={"Authorization": f"Bearer {token}"}) as resp:
                body = await resp.read()
        except aiohttp.ClientError as exc:
            raise CommandError(f"no answer from vigil up's API at {where} ({exc}); "
                               "say where it listens with --api-url") from None
        data = orjson.loads(body) if body else {}
        if resp.status != 200:
            raise CommandError(f"the API answered {resp.status}: {_said(data)}")
        return dict(data)
    finally:
        await tokens.revoke(pool, name)
        await pool.close()


def _said(data: Any) -> str:
    if not isinstance(data, dict):
        return "-"
    errors = data.get("errors") or []
    return "; ".join([str(data.get("error", "-"))]
                     + [f"{e.get('field')}: {e.get('message')}" for e in errors])


async def _direct(settings: Settings, args: argparse.Namespace, since: int, until: int
                  ) -> dict[str, Any]:
    pool = await postgres_pool(settings.postgres_dsn)
    ch = ClickHouse.from_url(settings.clickhouse_url)
    try:
        return await rollups.fleet(ch, pool, args.tag, since, until, args.by,
                                   int(time.time() * 1000))
    finally:
        await ch.close()
        await pool.close()


async def run(settings: Settings, args: argparse.Namespace) -> None:
    since, until = _range(args)
    if beside_up(args):
        document = await _from_api(settings, args)
    else:
        document = await _direct(settings, args, since, until)
    print(render(document, args.format), end="")


def render(document: dict[str, Any], form: str) -> str:
    if form == "json":
        return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"
    if form == "csv":
        return _csv(document)
    return _markdown(document)


def _rows(document: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str, dict[str, Any]]]:
    for monitor in document["monitors"]:
        for i, period in enumerate(monitor["periods"]):
            yield monitor, str(i + 1), period
        yield monitor, "total", monitor["total"]


def _minutes(ms: int) -> float:
    return round(ms / 60_000, 2)


def _flat(monitor: dict[str, Any], label: str, p: dict[str, Any]) -> list[Any]:
    t, c, m, q = p["time_ms"], p["checks"], p["maintenance"], p["latency_ms"]
    return [monitor["monitor_id"], monitor["name"], label, p["from"], p["to"],
            p["uptime_by_time_percent"], p["uptime_by_checks_percent"], p["downtime_minutes"],
            _minutes(t["unknown"]), _minutes(t["untracked"]), c["up"], c["down"],
            c["degraded"], c["unknown"], m["excluded_checks"], _minutes(m["window_ms"]),
            p["incidents"], p["mttr_minutes"], q["p50"], q["p95"], q["p99"]]


# A spreadsheet runs a cell that starts with one of these as a formula: a monitor's name is
# anyone's text, so such a cell starts with a quote instead.
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def _csv(document: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for monitor, label, period in _rows(document):
        writer.writerow([_cell(v) for v in _flat(monitor, label, period)])
    return out.getvalue()


# CommonMark lets a backslash escape any ASCII punctuation: every one in a name is escaped,
# so no name can open a link, an HTML tag or a new table cell.
_PUNCTUATION = re.compile(r"""([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])""")


def _md(text: str) -> str:
    return _PUNCTUATION.sub(r"\\\1", " ".join(text.split()))


def _shown(value: Any, unit: str = "") -> str:
    return "-" if value is None else f"{value}{unit}"


def _markdown(document: dict[str, Any]) -> str:
    tag = f", tag {_md(document['tag'])}" if document.get("tag") else ""
    lines = [f"# SLA report {document['from']} to {document['to']} (by {document['by']}{tag})",
             "",
             "Uptime by time: the confirmed status's intervals; by checks: up / (up + down) "
             "answers. Not checked (unknown, flapping; error, expired) is neither up nor down. "
             "Maintenance checks are left out (counted here); the windows' time is stated.",
             "",
             "| monitor | period | from | to | uptime (time) | uptime (checks) | downtime min "
             "| not checked min | checks up/down/not checked | maintenance left out "
             "| incidents | MTTR min | p50/p95/p99 ms |",
             "|" + " --- |" * 13]
    for monitor, label, p in _rows(document):
        t, c, m, q = p["time_ms"], p["checks"], p["maintenance"], p["latency_ms"]
        cells = [f"{_md(monitor['name'])} ({_md(monitor['monitor_id'])})", label,
                 p["from"], p["to"], _shown(p["uptime_by_time_percent"], "%"),
                 _shown(p["uptime_by_checks_percent"], "%"), _shown(p["downtime_minutes"]),
                 str(_minutes(t["unknown"])), f"{c['up']}/{c['down']}/{c['unknown']}",
                 f"{m['excluded_checks']} checks, {_minutes(m['window_ms'])} min",
                 str(p["incidents"]), _shown(p["mttr_minutes"]),
                 "/".join(_shown(q[k]) for k in ("p50", "p95", "p99"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
