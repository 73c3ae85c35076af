"""Every check kind, found by its declaration: each module in this package sets
`KIND = Kind(name, spec model, check)`, and both the registry the executor runs checks from
and the monitor definition the API and `monitors apply` validate are built from those, so a
new kind is one new module."""

from __future__ import annotations

import importlib
import pkgutil

from engine.monitors import MonitorSchema
from executors.base import Kind


def _declared() -> dict[str, Kind]:
    found: dict[str, Kind] = {}
    for module in pkgutil.iter_modules(__path__):
        kind = getattr(importlib.import_module(f"{__name__}.{module.name}"), "KIND", None)
        if isinstance(kind, Kind):
            found[kind.name] = kind
    return dict(sorted(found.items()))


KINDS = _declared()
SCHEMA = MonitorSchema({name: kind.spec for name, kind in KINDS.items()})
