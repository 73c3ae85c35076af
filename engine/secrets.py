"""Secrets inside monitor definitions: sealed at rest and on the streams, write-only through
the API.

A kind marks a secret field of its spec with `Secret()` in the field's `Annotated` metadata
(`Secret(keys=...)` for a mapping: the values under those names, such as an Authorization
header). The store seals them (Fernet, a key from VIGIL_SECRET_KEY) before the spec reaches
Postgres; the scheduler copies the sealed spec into check events unchanged; the executor that
runs the check opens it (executors.checker). What the API and `vigil monitors show` return holds
REDACTED instead, and a write that sends REDACTED back keeps the stored secret.

VIGIL_SECRET_KEY (or VIGIL_SECRET_KEY_FILE) is a comma-separated list of Fernet keys: the first
seals, every one opens, so a key is rotated by adding the new one first, re-sealing
(`vigil secrets rotate`), then dropping the old one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import BaseModel, GetCoreSchemaHandler
from pydantic_core import core_schema

from engine.settings import SettingsError, env_str

PREFIX = "vigil:sealed:v1:"
REDACTED = "********"
KEY_VARIABLE = "VIGIL_SECRET_KEY"


class SecretError(ValueError):
    """A secret cannot be sealed or opened here; `field` is its dotted path in the spec."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


@dataclass(frozen=True, slots=True)
class Secret:
    """Marks a spec field as secret. With `keys`, the field is a mapping and the values under
    those names (case-insensitive) are the secrets."""

    keys: frozenset[str] | None = None

    def __get_pydantic_core_schema__(self, source: Any,
                                     handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        schema = handler(source)
        if self.keys is not None:
            return schema  # REDACTED is a valid value of a mapping's string anyway
        # REDACTED stands for the stored value, checked when it was written: a DSN validator
        # would refuse the marker itself.
        return core_schema.no_info_wrap_validator_function(_kept_or_checked, schema)


def _kept_or_checked(value: Any, handler: core_schema.ValidatorFunctionWrapHandler) -> Any:
    return value if value == REDACTED else handler(value)


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


class Keyring:
    """The keys of VIGIL_SECRET_KEY; with none, nothing can be sealed or opened."""

    def __init__(self, keys: list[str]) -> None:
        try:
            self._fernet = MultiFernet([Fernet(k) for k in keys]) if keys else None
        except ValueError:
            raise SettingsError(f"{KEY_VARIABLE}: expected comma-separated Fernet keys "
                                "(`vigil secrets keygen` prints one)") from None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Keyring:
        raw = env_str(os.environ if env is None else env, KEY_VARIABLE, "")
        return cls([k.strip() for k in raw.split(",") if k.strip()])

    def _keys(self, field: str) -> MultiFernet:
        if self._fernet is None:
            raise SecretError(field, f"{KEY_VARIABLE} is not set here, so a secret can neither "
                                     "be sealed nor opened")
        return self._fernet

    def seal(self, field: str, plain: str) -> str:
        return PREFIX + self._keys(field).encrypt(plain.encode()).decode()

    def open(self, field: str, sealed: str) -> str:
        try:
            return self._keys(field).decrypt(sealed.removeprefix(PREFIX).encode()).decode()
        except InvalidToken:
            raise SecretError(field, f"sealed with a key that is not in {KEY_VARIABLE}") from None

    def reseal(self, field: str, sealed: str) -> str:
        """The same secret sealed with the first key (rotation)."""
        try:
            return PREFIX + self._keys(field).rotate(sealed.removeprefix(PREFIX).encode()).decode()
        except InvalidToken:
            raise SecretError(field, f"sealed with a key that is not in {KEY_VARIABLE}") from None


@cache
def secret_fields(model: type[BaseModel]) -> dict[str, Secret]:
    """A spec model's secret fields: name -> its marker."""
    return {name: marker for name, info in model.model_fields.items()
            for marker in info.metadata if isinstance(marker, Secret)}


def _spots(spec: dict[str, Any], model: type[BaseModel]) -> list[tuple[dict[str, Any], str, str]]:
    """(the dict holding it, its key there, its dotted path) for every secret value present."""
    out = []
    for name, marker in secret_fields(model).items():
        value = spec.get(name)
        if marker.keys is None:
            if value is not None:
                out.append((spec, name, name))
        elif isinstance(value, dict):
            out += [(value, k, f"{name}.{k}") for k in value if k.lower() in marker.keys]
    return out


def _stored(old: dict[str, Any], path: str) -> Any:
    """The stored value at `path`; a mapping's names compare case-insensitively."""
    name, _, key = path.partition(".")
    if not key:
        return old.get(name)
    held = old.get(name)
    found = [v for k, v in held.items() if k.lower() == key.lower()] if isinstance(held, dict) \
        else []
    return found[0] if found else None


def seal_spec(keyring: Keyring, model: type[BaseModel], spec: dict[str, Any],
              old: dict[str, Any] | None) -> dict[str, Any]:
    """`spec` (a validated spec, dumped) with its secrets sealed. REDACTED keeps the stored
    secret; a plain value equal to the stored one keeps its sealed text, so writing the same
    definition again changes nothing (no new version, no reschedule)."""
    old = old or {}
    for holder, key, path in _spots(spec, model):
        plain, stored = holder[key], _stored(old, path)
        if plain == REDACTED:
            if not is_sealed(stored):
                raise SecretError(path, f"{REDACTED} keeps the stored secret, and there is "
                                        "none: send the value")
            holder[key] = stored
        elif is_sealed(stored) and keyring.open(path, stored) == plain:
            holder[key] = stored
        else:
            holder[key] = keyring.seal(path, plain)
    return spec


def redacted(spec: Any) -> Any:
    """`spec` with every sealed value shown as REDACTED (no string a definition may hold looks
    sealed: engine.monitors refuses them)."""
    if is_sealed(spec):
        return REDACTED
    if isinstance(spec, dict):
        return {k: redacted(v) for k, v in spec.items()}
    if isinstance(spec, list):
        return [redacted(v) for v in spec]
    return spec


def opened(keyring: Keyring, model: type[BaseModel], spec: dict[str, Any]) -> dict[str, Any]:
    """A copy of `spec` with its declared secrets opened, and nothing else: only the executor
    that runs the check does this."""
    spec = orjson.loads(orjson.dumps(spec))  # the event's own dict stays sealed
    for holder, key, path in _spots(spec, model):
        if is_sealed(holder[key]):
            holder[key] = keyring.open(path, holder[key])
    return spec


def resealed(keyring: Keyring, model: type[BaseModel], spec: dict[str, Any]) -> dict[str, Any]:
    """A copy of `spec` with its declared secrets sealed with the first key: a sealed one
    again, a plain one (stored before secrets were sealed) for the first time."""
    spec = orjson.loads(orjson.dumps(spec))
    for holder, key, path in _spots(spec, model):
        value = holder[key]
        holder[key] = keyring.reseal(path, value) if is_sealed(value) else keyring.seal(path,
                                                                                        value)
    return spec


def generate_key() -> str:
    return Fernet.generate_key().decode()
