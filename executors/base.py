"""What every check kind shares: its declaration, the executor-wide context, the spec base
and the failed-check helpers.

A kind is a module in executors/kinds/ that declares `KIND = Kind(name, spec model, check)`:
a pydantic spec model (defaults for everything optional, so an invalid monitor is rejected
with the kind, the field and the reason) and `async def check(spec, ctx, due) -> Observation`
(`due` is the check.due event: monitor id, scheduled time, interval and timeout). The
executor runs `check` under the monitor's timeout; a check returns `down` with a precise
`error_kind` for every failure of the target, and raises only engine.guard.Denied (a
target it may not connect to: an `error`, executors.checker) or for Vigil's own bugs. A kind
connects only through the guard: to the addresses `ctx.guard.resolve` checked, never by name.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Self

import redis.asyncio as aioredis
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from engine.events import CheckDue, Observation
from engine.guard import Guard
from engine.keys import Keys
from engine.resolver import Resolver


def _unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass(slots=True)
class Context:
    """Opened once per executor and shared by every check it runs. HTTP checks need no session:
    each opens a fresh connection; the resolver caches names for a few seconds. Every check
    that connects resolves its target through `guard` (engine.guard), whose deny list is
    built from the executor's settings; without them, from Vigil's defaults."""

    redis: aioredis.Redis
    keys: Keys
    tls_verify: ssl.SSLContext = field(default_factory=ssl.create_default_context)
    tls_noverify: ssl.SSLContext = field(default_factory=_unverified)
    resolver: Resolver = field(default_factory=Resolver)
    guard: Guard = field(default_factory=Guard)


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


def single_line(value: str) -> str:
    """For a value that reaches a request line, a header or a protocol field: CR and LF would
    end it and start another (a header of the monitor's own), NUL ends a C string early."""
    if any(c in value for c in "\r\n\0"):
        raise ValueError("cannot hold CR, LF or NUL")
    return value


SingleLine = Annotated[str, AfterValidator(single_line)]
# A host name or address to resolve: one line, as DNS names are.
Host = Annotated[str, Field(min_length=1, max_length=253), AfterValidator(single_line)]

# Names of environment variables a spec may point at (`dsn_env`, `url_env`).
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
# How long a check waits for a polite close before it drops the connection.
CLOSE_WAIT_S = 1.0


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
