"""Monitor definitions: validated with pydantic, so an error names the monitor and the field.

Every duration, count and string of MonitorBase has a maximum (README, "Monitors as code"),
which the Postgres columns check too (migrations/postgres/0006_bigint_limits.sql).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from engine import yamlfile
from engine.durations import parse_duration_ms
from engine.secrets import PREFIX as SEALED
from engine.settings import NAME_PATTERN

MAX_ID_LENGTH = 128
NUL = "\x00"
ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_ID_LENGTH - 1}}}$"
REGION_PATTERN = f"^{NAME_PATTERN}$"
MIN_INTERVAL_MS = 1_000
# A year: a push monitor for a yearly job; past int32 milliseconds, so the column is a BIGINT.
MAX_INTERVAL_MS = 365 * 86_400_000
DEFAULT_INTERVAL_MS = 60_000
MIN_TIMEOUT_MS = 100
# An hour: well inside the streams' retention (VIGIL_STREAM_MAX_AGE_S, 6 h), so a check's entry
# outlives its run; executors cap it lower again (VIGIL_MAX_TIMEOUT_MS).
MAX_TIMEOUT_MS = 3_600_000
DEFAULT_TIMEOUT_MS = 10_000
MAX_NAME_LENGTH = 200
# Every region is one more check per interval.
MAX_REGIONS = 16
MAX_TAGS = 32
MAX_TAG_LENGTH = 64


# Hysteresis (README, "Alerting"): Gatus's defaults, 3 failures before down and 2 successes
# before up; one lost packet or a deploy's restart never pages, a real outage within three
# intervals (sooner with retry_interval).
DEFAULT_CONFIRM_DOWN = 3
DEFAULT_CONFIRM_UP = 2
MAX_CONFIRM = 100
# Flapping: more than this many confirmed changes of the monitor within the window.
DEFAULT_FLAP_CHANGES = 6
DEFAULT_FLAP_WINDOW_MS = 3_600_000
MAX_FLAP_WINDOW_MS = 7 * 86_400_000
# A region without results for this many intervals (plus its timeout) is unknown.
STALE_INTERVALS = 3
MAX_RETRIES = 10
MAX_DEPENDENCIES = 16
MAX_CHANNELS = 32
CHANNEL_PATTERN = ID_PATTERN


def durations_of(data: Any, names: tuple[str, ...]) -> Any:
    """`name: 30s` in a definition becomes `name_ms` in milliseconds; an error names `name`."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for short in names:
        if short in data:
            try:
                data[f"{short}_ms"] = parse_duration_ms(data.pop(short))
            except ValueError as exc:
                # Raised before there are fields, so the error has no location: the
                # context names the field (field_errors).
                raise PydanticCustomError("duration", "{reason}",
                                          {"field": short, "reason": str(exc)}) from None
    return data


class Alerting(BaseModel):
    """How results become a confirmed status, incidents and notifications (`alerting:`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    confirm_down: int = Field(default=DEFAULT_CONFIRM_DOWN, ge=1, le=MAX_CONFIRM)
    confirm_up: int = Field(default=DEFAULT_CONFIRM_UP, ge=1, le=MAX_CONFIRM)
    # Regions that must agree; None is a majority of the monitor's regions.
    quorum: int | None = Field(default=None, ge=1, le=MAX_REGIONS)
    stale_after_ms: int | None = Field(default=None, ge=MIN_INTERVAL_MS, le=MAX_INTERVAL_MS)
    flap_changes: int = Field(default=DEFAULT_FLAP_CHANGES, ge=2, le=MAX_CONFIRM)
    flap_window_ms: int = Field(default=DEFAULT_FLAP_WINDOW_MS, ge=MIN_INTERVAL_MS,
                                le=MAX_FLAP_WINDOW_MS)
    # Extra checks of a failing region before its next slot, retry_interval apart.
    retry_interval_ms: int | None = Field(default=None, ge=MIN_INTERVAL_MS,
                                          le=MAX_INTERVAL_MS)
    retries: int = Field(default=2, ge=1, le=MAX_RETRIES)
    depends_on: list[Annotated[str, Field(pattern=ID_PATTERN)]] = Field(
        default_factory=list, max_length=MAX_DEPENDENCIES)
    channels: list[Annotated[str, Field(pattern=CHANNEL_PATTERN)]] = Field(
        default_factory=list, max_length=MAX_CHANNELS)

    @model_validator(mode="before")
    @classmethod
    def _durations(cls, data: Any) -> Any:
        return durations_of(data, ("stale_after", "flap_window", "retry_interval"))


class MonitorBase(BaseModel):
    """What every monitor has; MonitorSchema adds `kind` as a literal and the kind's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=ID_PATTERN)]
    kind: str
    name: str = Field(default="", max_length=MAX_NAME_LENGTH)
    interval_ms: int = Field(default=DEFAULT_INTERVAL_MS, ge=MIN_INTERVAL_MS, le=MAX_INTERVAL_MS)
    timeout_ms: int = Field(ge=MIN_TIMEOUT_MS, le=MAX_TIMEOUT_MS)
    regions: list[Annotated[str, Field(pattern=REGION_PATTERN)]] = Field(
        default_factory=lambda: ["default"], min_length=1, max_length=MAX_REGIONS)
    tags: list[Annotated[str, Field(max_length=MAX_TAG_LENGTH)]] = Field(
        default_factory=list, max_length=MAX_TAGS)
    enabled: bool = True
    # Whether the public status page may show this monitor's probe details (error text,
    # snippets); without it, only status, latency and the error class.
    public_details: bool = False
    # Served first when executors are overloaded (executors.admission). Stored in the spec
    # (engine.store), so every check.due carries it to the executor.
    critical: bool = False
    alerting: Alerting = Field(default_factory=Alerting)

    @model_validator(mode="before")
    @classmethod
    def _durations(cls, data: Any) -> Any:
        """Accept `interval: 30s` and `timeout: 5s` in files; store milliseconds. Without a
        timeout, a check gets 10 s or four fifths of its interval, whichever is shorter."""
        data = durations_of(data, ("interval", "timeout"))
        if not isinstance(data, dict):
            return data
        if "timeout_ms" not in data:
            try:
                interval = int(float(data.get("interval_ms", DEFAULT_INTERVAL_MS)))
            except (TypeError, ValueError, OverflowError):
                interval = DEFAULT_INTERVAL_MS  # interval_ms reports its own error, alone
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

    @model_validator(mode="after")
    def _alerting_fits(self) -> MonitorBase:
        rules = self.alerting
        if rules.quorum is not None and rules.quorum > len(self.regions):
            raise ValueError(f"alerting.quorum ({rules.quorum}) is more than the monitor's "
                             f"{len(self.regions)} regions")
        if rules.retry_interval_ms is not None and (
                rules.retry_interval_ms * rules.retries >= self.interval_ms):
            raise ValueError(f"alerting: {rules.retries} retries {rules.retry_interval_ms} ms "
                             f"apart do not fit before the next slot ({self.interval_ms} ms)")
        if self.id in rules.depends_on:
            raise ValueError("alerting.depends_on: a monitor cannot depend on itself")
        return self

    @property
    def spec(self) -> BaseModel:
        """The kind's own settings (what sits under `http:` for kind http)."""
        spec: BaseModel = getattr(self, self.kind)
        return spec


def _found_at(data: Any, bad: Callable[[str], bool]) -> str | None:
    """The dotted path (`tags.3`, `http.headers.X`) of the first key or string in `data`
    that is `bad`, "" for `data` itself; None when there is none."""
    # A stack, not recursion: a body nested a thousand deep is still only a 422.
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if bad(value):
                return path
            continue
        items = value.items() if isinstance(value, dict) else (
            enumerate(value) if isinstance(value, list) else ())
        for key, item in items:
            where = f"{path}.{key}" if path else str(key)
            if bad(str(key)):
                return where
            stack.append((where, item))
    return None


def _has_nul(text: str) -> bool:
    return NUL in text


def _sealed_text(text: str) -> bool:
    return text.startswith(SEALED)


_REFUSED: tuple[tuple[Callable[[str], bool], str, str], ...] = (
    (_has_nul, "nul", "a NUL character cannot be stored"),
    (_sealed_text, "sealed", f"a value cannot start with {SEALED!r} (sealed text)"),
)


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
        # A duration's error is raised before its model has fields: the context names it.
        if named := err.get("ctx", {}).get("field"):
            where = f"{where}.{named}" if where else named
        if err["type"].startswith("union_tag"):
            where = "kind"
        out.append((where or "(monitor)", err["msg"]))
    return out


def _describe(exc: ValidationError, label: str) -> list[str]:
    return [f"monitor {label}: {where}: {msg}" for where, msg in field_errors(exc)]


def read_document(path: Path) -> Any:
    """One YAML file of definitions, parsed; a SpecError names the file and what is wrong."""
    try:
        return yamlfile.load(path)
    except OSError as exc:
        raise SpecError([f"{path}: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise SpecError([f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    except yamlfile.Refused as exc:
        raise SpecError([f"{path}: {exc}"]) from None
    except yaml.YAMLError as exc:
        raise SpecError([f"{path}: not valid YAML: {exc}"]) from None


def yaml_files(path: str) -> list[Path]:
    """A file, or every *.yaml / *.yml file under a directory, sorted."""
    root = Path(path)
    return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml")
                  and p.is_file()) if root.is_dir() else [root]


def _entries(path: Path) -> list[Any]:
    doc = read_document(path)
    # A file may hold only maintenance windows or status pages (engine.maintenance and
    # engine.status_pages read those).
    if isinstance(doc, dict) and "monitors" not in doc and (
            "maintenance" in doc or "status_pages" in doc):
        return []
    entries = doc.get("monitors") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise SpecError([f"{path}: expected a top-level `monitors:` list"])
    return entries


class MonitorSchema:
    """The monitor definition for a set of kinds: MonitorBase plus the kind's own settings under
    a key named after it (`kind: http` with `http: {url: ...}`), one model per kind, told apart
    by `kind`. Built from the kinds' declarations (executors.kinds), never listed by hand."""

    def __init__(self, specs: Mapping[str, type[BaseModel]]) -> None:
        models = tuple(_kind_model(name, spec) for name, spec in specs.items())
        self.models = dict(zip(specs, models, strict=True))
        union: Any = Annotated[Union[models], Field(discriminator="kind")]  # noqa: UP007
        self.adapter: TypeAdapter[MonitorBase] = TypeAdapter(union)

    def validate(self, data: Any) -> MonitorBase:
        """One definition; a pydantic ValidationError names the field (see field_errors). A
        NUL character is valid JSON (`\\u0000`) and YAML (`"\\0"`) but no Postgres text
        can hold it, so it is refused here, for the API and the files alike; so is a string
        that looks sealed (engine.secrets): only the store seals, and an executor must never
        be handed another monitor's sealed text to open."""
        for bad, kind, message in _REFUSED:
            if (where := _found_at(data, bad)) is not None:
                raise ValidationError.from_exception_data("monitor", [InitErrorDetails(
                    type=PydanticCustomError(kind, message, {"field": where}), loc=(),
                    input=data)])
        return self.adapter.validate_python(data)

    def parse(self, entries: list[Any], origin: str = "monitors") -> list[MonitorBase]:
        """Validate every entry before anything is written; raise SpecError listing all
        problems."""
        problems: list[str] = []
        monitors: list[MonitorBase] = []
        seen: set[str] = set()
        for index, entry in enumerate(entries):
            ident = entry.get("id") if isinstance(entry, dict) else None
            label = f"{ident!r} ({origin}[{index}])" if ident else f"{origin}[{index}]"
            try:
                monitor = self.validate(entry)
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

    def load_file(self, path: str) -> list[MonitorBase]:
        """A YAML file with a top-level `monitors:` list; every entry validated before
        returning."""
        return self.parse(_entries(Path(path)), origin=f"{path}: monitors")

    def load_path(self, path: str) -> list[MonitorBase]:
        """A file, or every *.yaml / *.yml file under a directory (sorted); ids unique across
        all."""
        files = yaml_files(path)
        problems: list[str] = []
        monitors: list[MonitorBase] = []
        origin: dict[str, Path] = {}
        for file in files:
            try:
                found = self.load_file(str(file))
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


def _kind_model(name: str, spec: type[BaseModel]) -> type[MonitorBase]:
    # A kind whose every setting has a default (push) may leave its settings out.
    optional = not any(f.is_required() for f in spec.model_fields.values())
    settings: Any = (spec, Field(default_factory=spec)) if optional else (spec, ...)
    tag: Any = Literal[name]
    model: type[MonitorBase] = create_model(
        f"{name.title()}Monitor", __base__=MonitorBase, kind=(tag, ...), **{name: settings})
    return model
