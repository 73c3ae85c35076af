"""A monitor row compiled once per version into the plan the dispatch script reads.

A million monitors' check.due events differ in little but their ids and URLs, so a plan holds
only what is the monitor's own and names a shape for the rest: a shape is a check.due
template (engine.events.CheckDue.template) with a mark wherever a monitor's value goes, shared
by every monitor whose events have the same form (kind, interval, timeout, the spec's keys and
its values other than strings). A plan is, joined by NUL (which no JSON text holds raw):
`interval_ms \\0 regions \\0 shape digest \\0 spec version \\0 string \\0 string ...`, regions
joined by commas, each string one of the spec's string values as JSON text, in the order the
shape's STRING marks stand in. Shapes live in the shapes hash (engine.keys) under their
digests, counted by the plans that name them (COUNT_PREFIX + digest), so the
last plan to leave takes its shape with it (sync.lua, remove.lua). dispatch.lua fills in the
marks and nothing else: the event is the one CheckDue.to_json writes, the same JSON.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from engine.events import CheckDue

SEPARATOR = b"\x00"
# engine.events marks the slot (\1), the deadline (\2) and the maintenance flag (\3); these
# are the monitor's own values, control bytes orjson never writes raw either.
MONITOR_MARK = b"\x04"
REGION_MARK = b"\x05"
VERSION_MARK = b"\x06"
STRING_MARK = b"\x07"
COUNT_PREFIX = b"#"
# Stands for the spec in the template until the shape's spec takes its place, so a value in
# the spec that is the escape of a mark is never taken for one.
_SPEC = b"\x08"
_VERSION = 1_234_567_890_123


@dataclass(frozen=True, slots=True)
class Plan:
    """A compiled plan, and the shape it names (`digest`)."""

    plan: bytes
    digest: bytes
    shape: bytes


def _hollow(value: Any, strings: list[bytes]) -> Any:
    """`value` with every string in it (not the keys) replaced by STRING_MARK, the strings'
    JSON appended to `strings` in the order orjson writes them."""
    if isinstance(value, str):
        strings.append(orjson.dumps(value))
        return orjson.Fragment(STRING_MARK)
    if isinstance(value, dict):
        return {k: _hollow(v, strings) for k, v in value.items()}
    if isinstance(value, list):
        return [_hollow(v, strings) for v in value]
    return value


def compile_plan(row: Any) -> Plan:
    """`row` is a monitors row (an asyncpg Record or a mapping); its spec is Postgres's JSON
    text (`spec::text`) or a mapping."""
    spec = row["spec"]
    strings: list[bytes] = []
    hollow = orjson.dumps(_hollow(orjson.loads(spec) if isinstance(spec, str) else spec,
                                  strings))
    shape, digest = _shape(row["kind"], row["interval_ms"], row["timeout_ms"], hollow)
    parts = [str(row["interval_ms"]).encode(), ",".join(row["regions"]).encode(), digest,
             str(row["version"]).encode(), *strings]
    return Plan(SEPARATOR.join(parts), digest, shape)


@functools.lru_cache(maxsize=4_096)
def _shape(kind: str, interval_ms: int, timeout_ms: int, hollow: bytes) -> tuple[bytes, bytes]:
    """A shape and its digest, rendered once for every monitor of the same form: a start-up
    sync of a million monitors spent a third of its time rendering the same few shapes."""
    template = CheckDue.template(
        monitor_id=MONITOR_MARK.decode(), region=REGION_MARK.decode(), interval_ms=interval_ms,
        timeout_ms=timeout_ms, spec_version=_VERSION, kind=kind, spec_json=_SPEC)
    shape = (template.replace(b"\\u0004", MONITOR_MARK).replace(b"\\u0005", REGION_MARK)
             .replace(b"%d" % _VERSION, VERSION_MARK).replace(_SPEC, hollow))
    return shape, hashlib.blake2b(shape, digest_size=8).hexdigest().encode()
