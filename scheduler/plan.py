"""A monitor row compiled once per version into the plan the dispatch script reads.

A plan is its interval, then per region the region and that region's check.due template
(engine.events.CheckDue.template), all joined by NUL, which no JSON text holds raw:
`interval_ms \\0 region \\0 template [\\0 region \\0 template ...]`. Everything but the slot
and the deadline is rendered here; dispatch.lua only fills those in.
"""

from __future__ import annotations

from typing import Any

import orjson

from engine.events import CheckDue

SEPARATOR = b"\x00"


def compile_plan(row: Any) -> bytes:
    """`row` is a monitors row (an asyncpg Record or a mapping); its spec is Postgres's JSON
    text (`spec::text`) or a mapping."""
    spec = row["spec"]
    spec_json = spec.encode() if isinstance(spec, str) else orjson.dumps(spec)
    parts = [str(row["interval_ms"]).encode()]
    for region in row["regions"]:
        parts += [region.encode(), CheckDue.template(
            monitor_id=row["id"], region=region, interval_ms=row["interval_ms"],
            timeout_ms=row["timeout_ms"], spec_version=row["version"], kind=row["kind"],
            spec_json=spec_json)]
    return SEPARATOR.join(parts)
