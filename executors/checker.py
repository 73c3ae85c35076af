"""Runs one check of any kind: the kind's spec, opened (its sealed secrets, engine.secrets),
parsed and prepared once per spec version."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from engine.cache import MISS, BoundedCache
from engine.events import CheckDue, Observation
from engine.guard import Denied
from engine.secrets import Keyring, SecretError, opened
from executors.base import Context, Kind, failed
from executors.kinds import KINDS

SPEC_CACHE_MAX = 200_000


class SpecInvalid(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Unopened:
    """What a check with a secret this executor cannot open runs from: an `error` (`run`)."""

    reason: str


class Checker:
    def __init__(self, ctx: Context, keyring: Keyring | None = None) -> None:
        self.ctx = ctx
        # The executor is the one role that opens secrets; the key comes as every setting does.
        self.keyring = Keyring.from_env() if keyring is None else keyring
        # (monitor id, spec version) -> the kind and its prepared spec.
        self._prepared: BoundedCache[tuple[str, int], tuple[Kind, Any]] = BoundedCache(
            SPEC_CACHE_MAX)

    async def start(self) -> None:
        """Nothing to open (checks connect afresh, the resolver fills on demand) but the names
        of Vigil's own servers, resolved once for the deny list."""
        await self.ctx.guard.start()

    async def close(self) -> None:
        self.ctx.resolver.close()

    def prepared(self, due: CheckDue) -> tuple[Kind, Any]:
        """The kind and its prepared spec, parsed and prepared once per spec version."""
        key = (due.monitor_id, due.spec_version)
        hit = self._prepared.get(key)
        if hit is not MISS:
            return hit
        kind = KINDS.get(due.kind)
        if kind is None:
            raise SpecInvalid(f"unknown check kind {due.kind!r}")
        try:
            # Opened here, once per version, so only the cache holds the plain values.
            entry = (kind, kind.prepare(self._parsed(kind, opened(self.keyring, kind.spec,
                                                                  due.kind_spec))))
        except SecretError as exc:
            entry = (kind, Unopened(f"{due.kind}.{exc}"))
        self._prepared.put(key, entry)
        return entry

    @staticmethod
    def _parsed(kind: Kind, spec: dict[str, Any]) -> Any:
        try:
            return kind.spec.model_validate(spec)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise SpecInvalid(f"{kind.name}.{where}: {err['msg']}") from None

    async def run(self, kind: Kind, prepared: Any, due: CheckDue, ctx: Context) -> Observation:
        """One check in `ctx`: the executor's context with the keys of the shard the check
        came from (executors.lane)."""
        if isinstance(prepared, Unopened):
            return failed("secret", prepared.reason)
        try:
            return await kind.check(prepared, ctx, due)
        except Denied as exc:
            # From whichever step of a kind was about to connect; nothing was opened.
            return failed("denied", str(exc))
