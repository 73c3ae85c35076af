"""YAML files from users, read so that what a file costs is bounded by its size.

- At most MAX_BYTES, read before parsing (parsing takes time and memory in proportion).
- Aliases may repeat at most MAX_EXPANSION characters in all. PyYAML itself shares an aliased
  node, but whatever reads the result walks it as a tree: a "billion laughs" of 500 bytes is
  half a million strings for validation, in the stored spec and in every check event. An
  alias costs the text of the node it names, aliases inside that node included.
- A key given twice in one mapping is an error (PyYAML keeps the last one silently).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node

from engine.text import clip

MAX_BYTES = 1024 * 1024
MAX_EXPANSION = MAX_BYTES
# A key or an anchor in a message: enough to find it, not the megabyte it may be.
SHOWN = 80
_MERGE = "tag:yaml.org,2002:merge"


class Refused(ValueError):
    """Well-formed YAML that Vigil will not read; the message names the line."""


def load(path: Path) -> Any:
    """The one document in a file; raises OSError, UnicodeDecodeError, yaml.YAMLError or
    Refused."""
    with path.open("rb") as file:
        data = file.read(MAX_BYTES + 1)  # never more, whatever the file (or device) holds
    if len(data) > MAX_BYTES:
        raise Refused(f"larger than {MAX_BYTES:,} bytes; split it into files in a directory")
    loader = _Loader(data.decode("utf-8"), str(path))
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


class _Loader(yaml.SafeLoader):

    def __init__(self, text: str, name: str) -> None:
        super().__init__(text)
        self.name = name  # PyYAML's own errors then name the file
        self._repeated = 0
        self._cost: dict[str, int] = {}  # anchor -> characters an alias of it repeats

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
        if isinstance(event, yaml.AliasEvent):
            self._repeat(event)
            return super().compose_node(parent, index)
        before = self._repeated
        node = super().compose_node(parent, index)
        if event.anchor is not None and node is not None:
            self._cost[event.anchor] = (node.end_mark.index - node.start_mark.index
                                        + self._repeated - before)
        return node

    def _repeat(self, event: yaml.AliasEvent) -> None:
        line, anchor = _line(event.start_mark), event.anchor or ""
        cost = self._cost.get(anchor)
        if cost is None:
            if anchor in self.anchors:  # composed but not finished: it contains itself
                raise Refused(f"line {line}: alias *{clip(anchor, SHOWN)} inside its own anchor")
            return  # an undefined alias: PyYAML says so
        self._repeated += cost
        if self._repeated > MAX_EXPANSION:
            raise Refused(f"line {line}: aliases repeat more than {MAX_EXPANSION:,} characters; "
                          "write the values out")

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        # Before PyYAML merges `<<` keys in: a key that overrides a merged one is no duplicate.
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue
            key = self.construct_object(key_node)
            line = _line(key_node.start_mark)
            try:
                seen = first.get(key)
            except TypeError:
                continue  # an unhashable key: PyYAML says so
            if seen is not None:
                raise Refused(f"line {line}: duplicate key {clip(repr(key), SHOWN)} (first at "
                              f"line {seen})")
            first[key] = line
        return super().construct_mapping(node, deep)


def _line(mark: Any) -> int:
    """1-based, as editors count (a Mark of the Python or the C parser; always set by ours)."""
    return mark.line + 1 if mark is not None else 0
