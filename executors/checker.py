"""Runs one check of any kind: the kind's spec model, parsed once per spec version."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from engine.events import CheckDue, Observation
from executors.base import Context, Kind
from executors.kinds import KINDS

SPEC_CACHE_MAX = 200_000


class SpecInvalid(ValueError):
    pass


class Checker:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._specs: dict[tuple[str, int], tuple[Kind, BaseModel]] = {}

    async def start(self) -> None:
        """Nothing to open: checks connect afresh and the resolver fills on demand."""

    async def close(self) -> None:
        self.ctx.resolver.close()

    def spec(self, monitor_id: str, version: int, raw: dict[str, Any]) -> tuple[Kind, BaseModel]:
        key = (monitor_id, version)
        cached = self._specs.get(key)
        if cached is not None:
            return cached
        name = str(raw.get("kind"))
        kind = KINDS.get(name)
        if kind is None:
            raise SpecInvalid(f"unknown check kind {name!r}")
        try:
            parsed = (kind, kind.spec.model_validate(raw.get(name)))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise SpecInvalid(f"{name}.{where}: {err['msg']}") from None
        if len(self._specs) >= SPEC_CACHE_MAX:
            self._specs.clear()
        self._specs[key] = parsed
        return parsed

    async def run(self, kind: Kind, spec: BaseModel, due: CheckDue) -> Observation:
        return await kind.check(spec, self.ctx, due)
