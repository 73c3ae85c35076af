"""User patterns: regular expressions (HTTP `regex` and `header_regex`, TCP `expect_regex`)
and JSON paths (HTTP `json_path`), checked when a monitor is validated and run so that no
pattern and no response can stall the executor's event loop (architecture, invariant 9).

Regular expressions run on RE2 (google-re2), not Python's `re`: `re` backtracks, and
`(a+)+$` against 10,000 `a` and a `!` never ends (it froze a whole `vigil up`). RE2 matches
in time linear in the text times the size of the compiled pattern, which is capped at
PROGRAM_MAX instructions, and refuses what needs backtracking (backreferences,
lookarounds) when the monitor is validated. Searches ask for no capture groups: the
wrapper would otherwise ask RE2 for every group's span, which takes its slow NFA path
(measured: `(.{0,100}){10}!` over 1 MiB, 37 s with groups, 0.08 s without). Under the cap,
the slowest pattern found (`[a-q][^u-z]{120}x`, which makes RE2's DFA thrash) takes ~8 ms
over a 64 KiB body and ~80 ms over the largest one a check may read (1 MiB).

JSON paths run on jsonpath-ng, pure Python and not linear: `$..a..a` over a 5 KiB body
nested 900 deep has 404,550 matches (3.2 s), `$..a..a..a` ~1.2e8, and `$..*` over a 64 KiB
array takes ~0.3 s. An evaluation may make at most JSON_STEPS Python calls, counted by a
trace hook (sys.settrace) around it, since jsonpath-ng has no limit of its own; a path that
needs more on a body is `down` (error_kind json) with the reason. Counting calls instead of
timing them gives the same verdict for the same body on a busy machine. Its regex operators
(`=~` in a filter, `sub()`) would run Python's `re`: refused at validation.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from types import FrameType
from typing import Annotated, Any

import re2
from jsonpath_ng import JSONPath
from jsonpath_ng.ext.filter import Expression
from jsonpath_ng.ext.parser import parse as parse_json_path
from jsonpath_ng.ext.string import Sub
from pydantic import AfterValidator, Field

# Instructions of a compiled pattern: a search's time grows with it, and a monitor's patterns
# are short (`^220 \S+ ESMTP` is 21, `"status":\s*"(ok|healthy)"` 27).
PROGRAM_MAX = 1_000
PATTERN_MAX = 1_000  # characters
JSON_PATH_MAX = 1_000  # characters
# Python calls a JSON path evaluation may make: ~1-2 us each under the hook, so ~20-40 ms at
# worst on the loop. `$.status` takes 16, `$.items[*].status` over 1,000 items 14,000, a
# filter `$.items[?(@.name == 'db')].status` over 500 items 12,000.
JSON_STEPS = 20_000


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a rejected pattern is a validation error, not a log line
    options.never_capture = True
    return options


_OPTIONS = _options()
_BACKTRACKING = "it needs backtracking, and Vigil matches with RE2, in linear time"
_LOOKAROUNDS = tuple(f"invalid perl operator: {op}" for op in ("(?=", "(?!", "(?<=", "(?<!"))


def _why(error: re2.error) -> str:
    """RE2's reason, in the user's terms where it refuses a Perl feature."""
    raw = error.args[0] if error.args else ""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    if text.startswith("invalid escape sequence: \\") and text[-1:].isdigit():
        return f"a backreference: {_BACKTRACKING}"
    if text.startswith(_LOOKAROUNDS):
        return f"a lookaround: {_BACKTRACKING}"
    if text == "invalid escape sequence: \\Z":
        return "RE2 writes the end of the text \\z, not \\Z"
    if text.startswith("pattern too large"):
        return f"too large (at most {PROGRAM_MAX} compiled instructions)"
    return text


def _invalid(pattern: str, why: str) -> ValueError:
    return ValueError(f"{pattern!r} is not a valid regular expression: {why}")


@dataclass(frozen=True, slots=True)
class Pattern:
    """A user's regular expression compiled by RE2; `search` says whether it occurs."""

    pattern: str
    compiled: Any = field(compare=False, repr=False)  # equal patterns compile alike

    @classmethod
    def of(cls, pattern: str) -> Pattern:
        """Compile, or raise ValueError saying why (the validators' message)."""
        if len(pattern) > PATTERN_MAX:
            raise _invalid(pattern[:40] + "...", f"longer than {PATTERN_MAX} characters")
        try:
            compiled = re2.compile(pattern, _OPTIONS)
        except re2.error as exc:
            raise _invalid(pattern, _why(exc)) from None
        if compiled.programsize > PROGRAM_MAX:
            raise _invalid(pattern, f"too large: {compiled.programsize} compiled "
                                         f"instructions, at most {PROGRAM_MAX}")
        return cls(pattern, compiled)

    def search(self, text: str) -> bool:
        return self.compiled.search(text) is not None


def _check_regex(pattern: str) -> str:
    Pattern.of(pattern)
    return pattern


# A user's regular expression in a spec: validated as RE2 will run it.
Regex = Annotated[str, Field(min_length=1, max_length=PATTERN_MAX), AfterValidator(_check_regex)]


class TooCostly(Exception):
    """A JSON path that needed more than JSON_STEPS calls on a body."""


class _Stop(BaseException):
    """Raised from the trace hook inside an evaluation; a BaseException, so that no
    `except Exception` in jsonpath-ng swallows it (the hook is gone once it has raised)."""


def _regex_inside(node: object) -> bool:
    """Whether a parsed path holds a regex operator, anywhere (filters nest paths)."""
    if isinstance(node, Sub) or (isinstance(node, Expression) and node.op == "=~"):
        return True
    if isinstance(node, list | tuple):
        return any(_regex_inside(item) for item in node)
    return isinstance(node, JSONPath) and any(_regex_inside(v) for v in vars(node).values())


@dataclass(frozen=True, slots=True)
class JsonPath:
    """A user's JSON path, parsed by jsonpath-ng; `values` evaluates it on a document."""

    path: str
    compiled: JSONPath = field(compare=False, repr=False)

    @classmethod
    def of(cls, path: str) -> JsonPath:
        """Parse, or raise ValueError saying why (the validator's message)."""
        if len(path) > JSON_PATH_MAX:
            raise ValueError(f"a JSONPath is at most {JSON_PATH_MAX} characters")
        try:
            compiled = parse_json_path(path)
        except Exception as exc:  # jsonpath-ng raises plain Exceptions from its lexer
            raise ValueError(f"{path!r} is not a valid JSONPath: {exc}") from None
        if _regex_inside(compiled):
            raise ValueError(f"{path!r}: a regular expression in a JSONPath (=~, sub()) runs "
                             "on a backtracking engine; match the body with `regex` instead")
        return cls(path, compiled)

    def values(self, document: object) -> list[object]:
        """What the path finds in `document`. Raises TooCostly past JSON_STEPS calls, or what
        the evaluation raised (a filter comparing mismatched types, say)."""
        left = JSON_STEPS

        def hook(frame: FrameType, event: str, arg: object) -> None:
            # Only "call" events come here: returning None traces no lines inside a call.
            nonlocal left
            left -= 1
            if left < 0:
                raise _Stop
            return None

        previous = sys.gettrace()  # a debugger's or a coverage tool's, put back after
        sys.settrace(hook)
        try:
            return [match.value for match in self.compiled.find(document)]
        except _Stop:
            raise TooCostly(f"it needs more than {JSON_STEPS:,} steps") from None
        finally:
            sys.settrace(previous)
