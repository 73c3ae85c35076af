"""`vigil report` next to a running `vigil up`, as a user types it in another terminal: the
figures of what the real pipeline recorded, as csv, json and md, by tag; a hostile monitor
name comes out inert in each format; bad input names the flag."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from tests.e2e.test_up_beside import vigil
from tests.support.helpers import free_port, wait_for
from tests.support.up import interrupt, vigil_up
from vigil.report import CSV_COLUMNS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
NAME = "=HYPERLINK(x)|<b>shop</b>"
MONITORS = f"""monitors:
  - id: shop-db
    name: "{NAME}"
    kind: tcp
    interval: 2s
    tags: [shop]
    tcp: {{host: 127.0.0.1, port: 9}}
"""


async def test_report_beside_vigil_up(home):
    port = free_port()
    data = home / "data"
    mine = home / "mine.yaml"
    mine.write_text(MONITORS)
    today = datetime.now(UTC).date()
    span = ["--from", str(today - timedelta(days=1)), "--to", str(today), "--by", "day",
            "--data-dir", str(data)]
    async with vigil_up(home, port) as proc:
        applied = await asyncio.to_thread(vigil, home, "monitors", "apply", "-f", str(mine),
                                          "--data-dir", str(data))
        assert applied.returncode == 0, applied.stderr

        async def report(*flags: str) -> Any:
            done = await asyncio.to_thread(vigil, home, "report", *span, *flags)
            assert done.returncode == 0, done.stderr
            return done.stdout

        async def shop_down_counted() -> bool:
            document = orjson.loads(await report("--format", "json", "--tag", "shop"))
            total = document["monitors"][0]["total"]
            return bool(total["checks"]["down"] >= 2 and total["time_ms"]["down"] > 0)

        await wait_for(shop_down_counted, timeout=90, every=1)
        document = orjson.loads(await report("--format", "json", "--tag", "shop"))
        assert [m["monitor_id"] for m in document["monitors"]] == ["shop-db"]
        shop = document["monitors"][0]
        assert [p["from"][:10] for p in shop["periods"]] == [str(today - timedelta(days=1)),
                                                             str(today)]
        assert shop["total"]["uptime_by_checks_percent"] == 0
        assert shop["total"]["uptime_by_time_percent"] == 0

        every = orjson.loads(await report("--format", "json"))
        assert {"shop-db", "vigil-health"} <= {m["monitor_id"] for m in every["monitors"]}

        rows = list(csv.reader(io.StringIO(await report("--format", "csv", "--tag", "shop"))))
        assert tuple(rows[0]) == CSV_COLUMNS
        assert [r[2] for r in rows[1:]] == ["1", "2", "total"]
        total = dict(zip(CSV_COLUMNS, rows[-1], strict=True))
        assert total["name"] == "'" + NAME  # a spreadsheet shows it, never runs it
        assert int(total["checks_down"]) >= 2
        assert total["uptime_by_checks_percent"] == "0.0"

        markdown = await report("--format", "md", "--tag", "shop")
        assert "| monitor | period |" in markdown
        assert r"\=HYPERLINK\(x\)\|\<b\>shop\<\/b\>" in markdown
        assert "<b>" not in markdown

        bad = await asyncio.to_thread(vigil, home, "report", "--from", "last week", "--to",
                                      str(today), "--data-dir", str(data))
        assert bad.returncode == 1
        assert bad.stderr.startswith("vigil: --from:")
        await interrupt(proc)
