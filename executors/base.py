"""What every check kind shares: its declaration, the executor-wide context, the spec base
and the failed-check helpers.

A kind is a module in executors/kinds/ that declares `KIND = Kind(name, spec model, check)`:
a pydantic spec model (defaults for everything optional, so an invalid monitor is rejected
with the kind, the field and the reason) and `async def check(spec, ctx, due) -> Observation`
(`due` is the check.due event: monitor id, scheduled time, interval and timeout). The
executor runs `check` under the monitor's timeout; a check returns `down` with a precise
`error_kind` for every failure of the target, and raises only for Vigil's own bugs.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import redis.asyncio as aioredis
from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from engine.events import CheckDue, Observation
from engine.keys import Keys
from executors.resolver import Resolver


def _unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass(slots=True)
class Context:
    """Opened once per executor and shared by every check it runs. HTTP checks need no session:
    each opens a fresh connection; the resolver caches names for a few seconds."""

    redis: aioredis.Redis
    keys: Keys
    tls_verify: ssl.SSLContext = field(default_factory=ssl.create_default_context)
    tls_noverify: ssl.SSLContext = field(default_factory=_unverified)
    resolver: Resolver = field(default_factory=Resolver)


def _as_is(spec: Any) -> Any:
    return spec


@dataclass(frozen=True, slots=True)
class Kind:
    """One check kind, declared once in its module; the kinds registry and the monitor
    definition are built from these declarations (executors.kinds).

    `prepare` turns a validated spec into what `check` receives, once per spec version on an
    executor (request bytes, compiled patterns), never when the API or `monitors apply` only
    validate a definition; by default `check` gets the spec itself."""

    name: str
    spec: type[BaseModel]
    check: Callable[[Any, Context, CheckDue], Awaitable[Observation]]
    prepare: Callable[[Any], Any] = _as_is


def failed(kind: str, message: str) -> Observation:
    """An `error`: the check could not be made (its configuration on this executor, a
    permission), which says nothing about the target."""
    return Observation(outcome="error", error_kind=kind, error=message)


def down(kind: str, message: str, latency_ms: float | None = None) -> Observation:
    """A failed check: `kind` is the precise error kind (dns, connect, tls, status ...); the
    message is cut to its bound where every result is made (CheckResult.of)."""
    return Observation(outcome="down", error_kind=kind, error=message, latency_ms=latency_ms)


class Spec(BaseModel):
    """The base of every kind's spec: strict and immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Options left out stay out of the stored definition, so a monitor written before an
        # option existed compares unchanged on the next apply (no version bump, no reschedule).
        return {k: v for k, v in handler(self).items() if v is not None}


# Names of environment variables a spec may point at (`dsn_env`, `url_env`).
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
# How long a check waits for a polite close before it drops the connection.
CLOSE_WAIT_S = 1.0


def os_reason(exc: OSError) -> str:
    """Why a socket call failed, in the errno's words: asyncio words a refusal as "Connect call
    failed (addr)" and uvloop as the errno text; the errno reads the same on both loops."""
    return os.strerror(exc.errno) if exc.errno else (str(exc) or type(exc).__name__)


class ConnectionSpec(Spec):
    """A probe's target: a connection string inline (`SOURCE`) or in an environment variable
    of the executor (`SOURCE` + `_env`), exactly one of the two; `check` validates it."""

    SOURCE: ClassVar[str]

    @staticmethod
    def check(value: str) -> str:
        raise NotImplementedError

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (getattr(self, self.SOURCE) is None) == (getattr(self, f"{self.SOURCE}_env") is None):
            raise ValueError(f"give exactly one of `{self.SOURCE}` and `{self.SOURCE}_env`")
        return self

    def resolve(self) -> str:
        inline: str | None = getattr(self, self.SOURCE)
        if inline is not None:
            return inline
        return from_env(getattr(self, f"{self.SOURCE}_env"), self.check)


class ConfigProblem(ValueError):
    """The check's own configuration is wrong on this executor: an `error`, not a `down`."""


def from_env(name: str, check: Callable[[str], str]) -> str:
    """A connection string from an environment variable of the executor, validated by `check`;
    secrets stay out of monitor definitions this way."""
    value = os.environ.get(name)
    if not value:
        raise ConfigProblem(f"environment variable {name} is not set on this executor")
    try:
        return check(value)
    except ValueError as exc:
        raise ConfigProblem(f"environment variable {name}: {exc}") from None


BUDGET_SHARE = 0.9


def budget_s(due: CheckDue) -> float:
    """What a check may spend before giving up with its own precise error kind: 90% of its
    timeout (the executor hands kinds the effective timeout), so the kind's answer beats
    the executor's generic `timeout`."""
    return due.timeout_ms * BUDGET_SHARE / 1000
