"""A monitor row compiled to the plan string the dispatch script reads:
`interval_ms|spec_version|region,region|spec_json`."""

from __future__ import annotations

from typing import Any

import orjson


def compile_plan(row: Any) -> str:
    """`row` is a monitors row (an asyncpg Record or a mapping)."""
    spec = row["spec"]
    if isinstance(spec, str):
        spec = orjson.loads(spec)
    body = {"kind": row["kind"], "interval_ms": row["interval_ms"], "timeout_ms": row["timeout_ms"],
            row["kind"]: spec}
    regions = ",".join(row["regions"])
    return f"{row['interval_ms']}|{row['version']}|{regions}|{orjson.dumps(body).decode()}"
