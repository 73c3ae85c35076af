"""Runs one check of any kind: the kind's spec model, parsed once per spec version."""

from __future__ import annotations

from typing import Any

import aiohttp
from pydantic import BaseModel, ValidationError

from engine.events import Observation
from executors import http, tcp

SPEC_CACHE_MAX = 200_000


class SpecInvalid(ValueError):
    pass


class Checker:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._specs: dict[tuple[str, int], tuple[str, BaseModel]] = {}

    async def start(self) -> None:
        self._session = http.new_session()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def spec(self, monitor_id: str, version: int, raw: dict[str, Any]) -> tuple[str, BaseModel]:
        key = (monitor_id, version)
        cached = self._specs.get(key)
        if cached is not None:
            return cached
        kind = raw.get("kind")
        model: type[BaseModel]
        if kind == "http":
            model = http.HttpSpec
        elif kind == "tcp":
            model = tcp.TcpSpec
        else:
            raise SpecInvalid(f"unknown check kind {kind!r}")
        try:
            parsed = (kind, model.model_validate(raw.get(kind)))
        except ValidationError as exc:
            raise SpecInvalid(f"{kind} spec: {exc.errors()[0]['msg']}") from None
        if len(self._specs) >= SPEC_CACHE_MAX:
            self._specs.clear()
        self._specs[key] = parsed
        return parsed

    async def run(self, kind: str, spec: BaseModel) -> Observation:
        if isinstance(spec, http.HttpSpec):
            assert self._session is not None, "Checker.start() was not called"
            return await http.check(spec, self._session)
        assert isinstance(spec, tcp.TcpSpec), kind
        return await tcp.check(spec)
