"""The floors of the house, read from the code itself (ast, not grep): engine/ is the ground
floor and imports no role; a role (scheduler, executors, sinks, api) stands on engine/ alone;
only the top layer (vigil/) composes roles; and no import circle anywhere."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = "engine"
ROLES = ("scheduler", "executors", "sinks", "api", "evaluator", "notifier")
TOP = "vigil"
PACKAGES = (CORE, *ROLES, TOP)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """Every module `name` imports, at the top or inside a function: `from a import b` counts
    as a.b when that is a module, else as a."""
    path = MODULES[name]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}".strip(".")
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return found


def ours(imported: set[str]) -> set[str]:
    return {m for m in imported if m.split(".")[0] in PACKAGES}


def test_the_packages_are_found():
    assert {"engine.streams", "executors.service", "api.app", "vigil.cli"} <= MODULES.keys()


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.split(".")[0] == CORE))
def test_engine_imports_no_role(name: str):
    reached = {m for m in ours(imports_of(name)) if m.split(".")[0] != CORE}
    assert not reached, f"{name} (the ground floor) imports {sorted(reached)}"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.split(".")[0] in ROLES))
def test_a_role_stands_on_engine_alone(name: str):
    own = name.split(".")[0]
    reached = {m for m in ours(imports_of(name)) if m.split(".")[0] not in (CORE, own)}
    assert not reached, f"{name} imports {sorted(reached)}: roles meet in {TOP}/ only"


def test_no_import_circle():
    graph = {name: ours(imports_of(name)) & MODULES.keys() for name in MODULES}
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> None:
        if name in path:
            circle = [*path[path.index(name):], name]
            raise AssertionError("import circle: " + " -> ".join(circle))
        if name in done:
            return
        path.append(name)
        for target in sorted(graph[name]):
            visit(target)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_the_checks_catch_what_they_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A lazy import inside a function is an import too."""
    fake = tmp_path / "engine" / "lazy.py"
    fake.parent.mkdir()
    fake.write_text("def f():\n    from executors.kinds import push\n")
    monkeypatch.setitem(MODULES, "engine.lazy", fake)
    assert ours(imports_of("engine.lazy")) == {"executors.kinds.push"}
