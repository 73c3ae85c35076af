"""Monitor files: YAML read with bounds (size, alias expansion), duplicate keys refused, and
every error naming the file."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from engine import yamlfile
from engine.monitors import SpecError
from executors.kinds import SCHEMA

HttpMonitor = SCHEMA.models["http"]
TcpMonitor = SCHEMA.models["tcp"]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "monitors.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_load_file(tmp_path: Path) -> None:
    path = write(tmp_path, """
monitors:
  - id: shop
    kind: http
    interval: 30s
    timeout: 5s
    regions: [eu-west, us-east]
    http: {url: "https://shop.example.com/health", expected_status: [200, 204]}
  - id: db
    kind: tcp
    interval: 1m
    tcp: {host: db.internal, port: 5432}
""")
    shop, db = SCHEMA.load_file(path)
    assert isinstance(shop, HttpMonitor)
    assert isinstance(db, TcpMonitor)
    assert (shop.interval_ms, shop.timeout_ms, db.interval_ms) == (30_000, 5_000, 60_000)


def test_load_file_errors_name_the_file_and_the_monitor(tmp_path: Path) -> None:
    path = write(tmp_path, "monitors:\n  - {id: db, kind: tcp, tcp: {host: h, port: 0}}\n")
    with pytest.raises(SpecError) as info:
        SCHEMA.load_file(path)
    [problem] = info.value.problems
    assert path in problem
    assert "'db'" in problem
    assert "tcp.port" in problem


def test_load_file_missing(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.yaml")
    with pytest.raises(SpecError, match="No such file") as info:
        SCHEMA.load_file(path)
    assert path in str(info.value)


def test_load_file_invalid_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "monitors:\n  - id: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        SCHEMA.load_file(path)


@pytest.mark.parametrize("text", ["", "just text\n", "- id: a\n", "monitors:\n",
                                  "monitors: {id: a}\n", "other: []\n"])
def test_load_file_needs_a_monitors_list(tmp_path: Path, text: str) -> None:
    with pytest.raises(SpecError, match="top-level `monitors:` list"):
        SCHEMA.load_file(write(tmp_path, text))


def test_load_file_empty_list(tmp_path: Path) -> None:
    assert SCHEMA.load_file(write(tmp_path, "monitors: []\n")) == []


def test_load_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("monitors:\n  - id: café\n".encode("latin-1"))
    with pytest.raises(SpecError):
        SCHEMA.load_file(str(path))


# --- hostile files -----------------------------------------------------------------------------

def alias_bomb(levels: int, width: int) -> str:
    """A "billion laughs" inside json_one_of: each level is a list of `width` aliases of the
    one below, so the file is a few hundred bytes and the list width**levels strings."""
    anchors = ['  a0: &a0 ["lol"]'] + [
        f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]"
        for i in range(1, levels + 1)]
    return "\n".join(["defs:", *anchors, "monitors:", "  - id: bomb", "    kind: http",
                      "    http:", "      url: https://example.com/", "      json_path: $.x",
                      f"      json_one_of: *a{levels}", ""])


def test_an_alias_bomb_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    """484 bytes that expand to 531,441 strings. Before: accepted, after a peak of 42.6 MB of
    Python allocations (one more level: 383 MB and half a minute; the list goes on into the
    stored spec and every check event)."""
    path = write(tmp_path, alias_bomb(levels=6, width=9))
    tracemalloc.start()
    try:
        with pytest.raises(SpecError, match="aliases repeat more than") as info:
            SCHEMA.load_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.problems[0].startswith(f"{path}: line ")
    assert peak < 3_000_000  # of which 1 MiB is the read buffer (yamlfile.MAX_BYTES)


def test_anchors_and_merge_keys_within_the_budget_still_work(tmp_path: Path) -> None:
    path = write(tmp_path, """
defaults: &defaults {kind: tcp, interval: 30s, tags: [db]}
monitors:
  - {<<: *defaults, id: a, tcp: {host: a.internal, port: 5432}}
  - {<<: *defaults, id: b, interval: 1m, tcp: {host: b.internal, port: 5432}}
""")
    a, b = SCHEMA.load_file(path)
    assert (a.interval_ms, a.tags, b.interval_ms, b.tags) == (30_000, ["db"], 60_000, ["db"])


def test_the_alias_budget_counts_what_each_alias_repeats(tmp_path: Path) -> None:
    """An alias costs the text of what it names (and of the aliases inside that), so a few
    aliases of a long string are refused where many aliases of a short one are not."""
    text = "x" * 10_000
    fits = yamlfile.MAX_EXPANSION // 10_000 - 1
    path = Path(write(tmp_path, f"a: &a {text}\nb: [{', '.join(['*a'] * fits)}]\n"))
    assert len(yamlfile.load(path)["b"]) == fits
    path.write_text(f"a: &a {text}\nb: [{', '.join(['*a'] * (fits + 2))}]\n")
    with pytest.raises(yamlfile.Refused, match="line 2: aliases repeat more than"):
        yamlfile.load(path)


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    """Before: a list that contains itself, which validation then recursed into."""
    with pytest.raises(SpecError, match=r"line 2: alias \*loop inside its own anchor"):
        SCHEMA.load_file(write(tmp_path, "monitors: &loop\n  - *loop\n"))


def test_a_file_over_the_size_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    """Before: read and parsed whatever its size."""
    path = tmp_path / "big.yaml"
    padding = "#" * (yamlfile.MAX_BYTES - len("monitors: []\n") - 1)
    path.write_text(f"{padding}\nmonitors: []\n")
    assert path.stat().st_size == yamlfile.MAX_BYTES
    assert SCHEMA.load_file(str(path)) == []
    path.write_text(f"{padding}#\nmonitors: []\n")
    with pytest.raises(SpecError, match="larger than 1,048,576 bytes") as info:
        SCHEMA.load_file(str(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize(("text", "key", "line", "first"), [
    ("monitors:\n  - id: a\n    kind: tcp\n    interval: 30s\n    interval: 1m\n"
     "    tcp: {host: h, port: 1}\n", "interval", 5, 4),
    ("monitors:\n  - id: a\n    kind: tcp\n    tcp: {host: h, port: 1, host: g}\n",
     "host", 4, 4),
    ("monitors: []\nmonitors:\n  - {id: a, kind: push}\n", "monitors", 2, 1),
])
def test_a_duplicate_key_names_the_file_the_key_and_the_line(
        tmp_path: Path, text: str, key: str, line: int, first: int) -> None:
    """Before: the last one silently won."""
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        SCHEMA.load_file(path)
    assert info.value.problems == [
        f"{path}: line {line}: duplicate key {key!r} (first at line {first})"]


def test_a_merged_key_may_be_overridden(tmp_path: Path) -> None:
    path = write(tmp_path, "base: &base {kind: push, interval: 1h}\n"
                           "monitors:\n  - {<<: *base, id: a, interval: 2h}\n")
    [monitor] = SCHEMA.load_file(path)
    assert monitor.interval_ms == 7_200_000


def test_a_nul_character_in_a_file_names_its_field(tmp_path: Path) -> None:
    """YAML's "\\0" is a NUL, which no Postgres text holds: refused before anything is
    written, with the field named, as the API refuses it."""
    path = tmp_path / "m.yaml"
    path.write_text('monitors:\n  - id: db\n    kind: tcp\n    tags: [ok, "a\\0b"]\n'
                    '    tcp: {host: 127.0.0.1, port: 5432}\n')
    with pytest.raises(SpecError) as exc:
        SCHEMA.load_file(str(path))
    assert exc.value.problems == [
        f"monitor 'db' ({path}: monitors[0]): tags.1: a NUL character cannot be stored"]
