"""A check kind is declared once, in its own module: the registry the executor runs from and
the monitor definition the API validates are both built from the declarations found."""

from __future__ import annotations

import pkgutil
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

import executors.kinds
from engine.monitors import MonitorSchema
from executors.base import Kind
from executors.kinds import KINDS, SCHEMA


def test_every_module_in_kinds_is_a_declared_kind():
    modules = {m.name for m in pkgutil.iter_modules(executors.kinds.__path__)}
    names = {kind.name for kind in KINDS.values()}
    assert len(modules) == len(names) == 8
    assert names == {"dns", "http", "icmp", "postgres", "push", "redis", "tcp", "tls"}
    assert set(SCHEMA.models) == names
    for name, kind in KINDS.items():
        model = SCHEMA.models[name]
        assert model.model_fields[name].annotation is kind.spec


def test_a_new_kind_is_one_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "smoke.py").write_text(
        "from executors.base import Kind, Spec\n\n\n"
        "class SmokeSpec(Spec):\n    target: str\n\n\n"
        "async def check(spec, ctx, due):\n    raise NotImplementedError\n\n\n"
        "KIND = Kind('smoke', SmokeSpec, check)\n")
    monkeypatch.setattr(executors.kinds, "__path__", [*executors.kinds.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "executors.kinds.smoke", raising=False)
    found = executors.kinds._declared()
    assert isinstance(found["smoke"], Kind)
    schema = MonitorSchema({name: kind.spec for name, kind in found.items()})
    monitor = schema.validate({"id": "s", "kind": "smoke", "smoke": {"target": "x"}})
    assert (monitor.kind, monitor.spec.model_dump()) == ("smoke", {"target": "x"})
    with pytest.raises(ValidationError, match=r"smoke\.target"):
        schema.validate({"id": "s", "kind": "smoke", "smoke": {}})
    monkeypatch.delitem(sys.modules, "executors.kinds.smoke")


def test_a_kind_with_only_defaults_may_leave_its_settings_out():
    monitor = SCHEMA.validate({"id": "beat", "kind": "push"})
    assert monitor.spec == KINDS["push"].spec()
    with pytest.raises(ValidationError, match="tcp"):
        SCHEMA.validate({"id": "port", "kind": "tcp"})
