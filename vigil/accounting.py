"""What ClickHouse holds of the checks: rows, distinct check ids, outcomes and, for a time
window, lags; the figures behind invariant 1 (one row per dispatched check, each id once),
read by the end-to-end test and bench/pipeline.py.

chDB admits one process per data path, so the callers run `python -m vigil.accounting URL`
in a fresh process once the process that wrote the data has stopped; it prints JSON.
Deduplicated figures read with FINAL (a redelivered result folds into the row it repeats only
at a merge); `raw_rows` counts without it, to show what FINAL folded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict, dataclass
from typing import Any

from engine.clickhouse import ClickHouse

MS = "toUnixTimestamp64Milli"


@dataclass(frozen=True, slots=True)
class Lag:
    """Milliseconds from `scheduled` to a later timestamp; None when no row was counted."""

    p50: float | None
    p99: float | None
    max: float | None


@dataclass(frozen=True, slots=True)
class Window:
    """The rows scheduled in [start_ms, end_ms), and what finished or was inserted in it."""

    start_ms: int
    end_ms: int
    rows: int
    unique: int
    lag_finished_ms: Lag  # result on the results stream
    lag_inserted_ms: Lag  # row written to ClickHouse
    finished: int
    inserted: int  # rows inserted in the window, without FINAL: each insert counts


@dataclass(frozen=True, slots=True)
class Totals:
    rows: int
    unique: int
    duplicate_ids: int  # check ids with more than one row after FINAL
    raw_rows: int  # without FINAL
    outcomes: dict[str, int]


def _lag(rows: int, quantiles: list[float], top: float) -> Lag:
    if not rows:
        return Lag(None, None, None)
    return Lag(float(quantiles[0]), float(quantiles[1]), float(top))


async def totals(ch: ClickHouse) -> Totals:
    rows, unique = (await ch.rows(
        "SELECT count(), uniqExact(check_id) FROM check_results FINAL"))[0]
    duplicate_ids = (await ch.rows(
        "SELECT count() FROM (SELECT check_id FROM check_results FINAL "
        "GROUP BY check_id HAVING count() > 1)"))[0][0]
    raw_rows = (await ch.rows("SELECT count() FROM check_results"))[0][0]
    outcomes = await ch.rows("SELECT toString(outcome), count() FROM check_results FINAL "
                             "GROUP BY outcome ORDER BY outcome")
    return Totals(rows=int(rows), unique=int(unique), duplicate_ids=int(duplicate_ids),
                  raw_rows=int(raw_rows), outcomes={str(k): int(v) for k, v in outcomes})


async def window(ch: ClickHouse, start_ms: int, end_ms: int) -> Window:
    bounds = {"w0": start_ms, "w1": end_ms}

    def within(column: str) -> str:
        return f"{MS}({column}) >= {{w0:Int64}} AND {MS}({column}) < {{w1:Int64}}"

    finished, inserted = f"{MS}(finished) - {MS}(scheduled)", f"{MS}(inserted) - {MS}(scheduled)"
    rows, unique, fin, ins, fin_max, ins_max = (await ch.rows(
        f"SELECT count(), uniqExact(check_id), quantilesExact(0.5, 0.99)({finished}), "
        f"quantilesExact(0.5, 0.99)({inserted}), max({finished}), max({inserted}) "
        f"FROM check_results FINAL WHERE {within('scheduled')}", bounds))[0]
    finished_in = (await ch.rows(
        f"SELECT count() FROM check_results FINAL WHERE {within('finished')}", bounds))[0][0]
    inserted_in = (await ch.rows(
        f"SELECT count() FROM check_results WHERE {within('inserted')}", bounds))[0][0]
    return Window(start_ms=start_ms, end_ms=end_ms, rows=int(rows), unique=int(unique),
                  lag_finished_ms=_lag(rows, fin, fin_max),
                  lag_inserted_ms=_lag(rows, ins, ins_max),
                  finished=int(finished_in), inserted=int(inserted_in))


async def account(url: str, span: tuple[int, int] | None = None) -> dict[str, Any]:
    """The totals, and the window's figures when `span` (start_ms, end_ms) is given."""
    ch = ClickHouse.from_url(url)
    try:
        out: dict[str, Any] = asdict(await totals(ch))
        if span is not None:
            out["window"] = asdict(await window(ch, *span))
        return out
    finally:
        await ch.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vigil.accounting", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url", help="ClickHouse URL: chdb:///path or http(s)://...")
    ap.add_argument("--window", nargs=2, type=int, metavar=("START_MS", "END_MS"),
                    help="also the figures for the rows scheduled in [START_MS, END_MS)")
    args = ap.parse_args(argv)
    span = (args.window[0], args.window[1]) if args.window else None
    print(json.dumps(asyncio.run(account(args.url, span))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
