"""Monitor definitions: validated with pydantic, so an error names the monitor and the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from engine.settings import NAME_PATTERN
from executors.dns import DnsSpec
from executors.http import HttpSpec
from executors.icmp import IcmpSpec
from executors.postgres_probe import PostgresSpec
from executors.push import PushSpec
from executors.redis_probe import RedisSpec
from executors.tcp import TcpSpec
from executors.tls import TlsSpec

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
REGION_PATTERN = f"^{NAME_PATTERN}$"
MIN_INTERVAL_MS = 1_000
DEFAULT_INTERVAL_MS = 60_000
DEFAULT_TIMEOUT_MS = 10_000
_UNITS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration_ms(value: Any) -> int:
    """`30s`, `1m`, `500ms`, `1.5h` or a number of seconds, to milliseconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m or 500ms")
    if isinstance(value, int | float):
        return round(value * 1000)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration like 30s, 5m or 500ms")
    return round(float(match.group(1)) * _UNITS[match.group(2) or "s"])


class MonitorBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=ID_PATTERN)]
    name: str = ""
    interval_ms: int = Field(default=DEFAULT_INTERVAL_MS, ge=MIN_INTERVAL_MS)
    timeout_ms: int = Field(ge=100)
    regions: list[Annotated[str, Field(pattern=REGION_PATTERN)]] = Field(
        default_factory=lambda: ["default"], min_length=1)
    tags: list[str] = Field(default_factory=list)
    enabled: bool = True

    @model_validator(mode="before")
    @classmethod
    def _durations(cls, data: Any) -> Any:
        """Accept `interval: 30s` and `timeout: 5s` in files; store milliseconds. Without a
        timeout, a check gets 10 s or four fifths of its interval, whichever is shorter."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for short in ("interval", "timeout"):
            if short in data:
                try:
                    data[f"{short}_ms"] = parse_duration_ms(data.pop(short))
                except ValueError as exc:
                    raise PydanticCustomError("duration", f"{short}: {exc}") from None
        if "timeout_ms" not in data:
            try:
                interval = int(float(data.get("interval_ms", DEFAULT_INTERVAL_MS)))
            except (TypeError, ValueError):
                return data  # interval_ms reports its own error
            data["timeout_ms"] = min(DEFAULT_TIMEOUT_MS, interval * 4 // 5)
        return data

    @field_validator("timeout_ms")
    @classmethod
    def _timeout_below_interval(cls, timeout_ms: int, info: ValidationInfo) -> int:
        interval = info.data.get("interval_ms")
        if interval is not None and timeout_ms >= interval:
            raise ValueError(f"timeout ({timeout_ms} ms) must be shorter than the interval "
                             f"({interval} ms)")
        return timeout_ms


# One class per kind: the kind's settings sit under a key named after it (`http: {url: ...}`).
class HttpMonitor(MonitorBase):
    kind: Literal["http"]
    http: HttpSpec


class TcpMonitor(MonitorBase):
    kind: Literal["tcp"]
    tcp: TcpSpec


class DnsMonitor(MonitorBase):
    kind: Literal["dns"]
    dns: DnsSpec


class IcmpMonitor(MonitorBase):
    kind: Literal["icmp"]
    icmp: IcmpSpec


class TlsMonitor(MonitorBase):
    kind: Literal["tls"]
    tls: TlsSpec


class PushMonitor(MonitorBase):
    kind: Literal["push"]
    push: PushSpec = Field(default_factory=PushSpec)


class PostgresMonitor(MonitorBase):
    kind: Literal["postgres"]
    postgres: PostgresSpec


class RedisMonitor(MonitorBase):
    kind: Literal["redis"]
    redis: RedisSpec


AnyMonitor = (HttpMonitor | TcpMonitor | DnsMonitor | IcmpMonitor | TlsMonitor | PushMonitor
              | PostgresMonitor | RedisMonitor)
Monitor = Annotated[AnyMonitor, Field(discriminator="kind")]
MONITOR = TypeAdapter(Monitor)


class SpecError(ValueError):
    """One or more monitor definitions are invalid; each line names the monitor and field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def field_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """(field, message) per problem; fields are dotted paths like `http.url`."""
    out = []
    for err in exc.errors():
        # The first location item is the union tag (the kind); a tag error is about `kind`.
        where = ".".join(str(p) for p in err["loc"][1:])
        if err["type"].startswith("union_tag"):
            where = "kind"
        out.append((where or "(monitor)", err["msg"]))
    return out


def _describe(exc: ValidationError, label: str) -> list[str]:
    return [f"monitor {label}: {where}: {msg}" for where, msg in field_errors(exc)]


def parse_monitors(entries: list[Any], origin: str = "monitors") -> list[AnyMonitor]:
    """Validate every entry before anything is written; raise SpecError listing all problems."""
    problems: list[str] = []
    monitors: list[AnyMonitor] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        ident = entry.get("id") if isinstance(entry, dict) else None
        label = f"{ident!r} ({origin}[{index}])" if ident else f"{origin}[{index}]"
        try:
            monitor = MONITOR.validate_python(entry)
        except ValidationError as exc:
            problems.extend(_describe(exc, label))
            continue
        if monitor.id in seen:
            problems.append(f"monitor {label}: id: duplicate id {monitor.id!r}")
        seen.add(monitor.id)
        monitors.append(monitor)
    if problems:
        raise SpecError(problems)
    return monitors


def _entries(path: Path) -> list[Any]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError([f"{path}: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise SpecError([f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    except yaml.YAMLError as exc:
        raise SpecError([f"{path}: not valid YAML: {exc}"]) from None
    entries = doc.get("monitors") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise SpecError([f"{path}: expected a top-level `monitors:` list"])
    return entries


def load_file(path: str) -> list[AnyMonitor]:
    """A YAML file with a top-level `monitors:` list; every entry validated before returning."""
    return parse_monitors(_entries(Path(path)), origin=f"{path}: monitors")


def load_path(path: str) -> list[AnyMonitor]:
    """A file, or every *.yaml / *.yml file under a directory (sorted); ids unique across all."""
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()) \
        if root.is_dir() else [root]
    problems: list[str] = []
    monitors: list[AnyMonitor] = []
    origin: dict[str, Path] = {}
    for file in files:
        try:
            found = load_file(str(file))
        except SpecError as exc:
            problems.extend(exc.problems)
            continue
        for monitor in found:
            if monitor.id in origin:
                problems.append(f"monitor {monitor.id!r} ({file}): id: also defined in "
                                f"{origin[monitor.id]}")
            origin[monitor.id] = file
            monitors.append(monitor)
    if problems:
        raise SpecError(problems)
    return monitors
