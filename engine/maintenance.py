"""Maintenance windows: the definition (validated with pydantic, every error naming its field)
and the arithmetic of when a window is on.

A window is one-off (`start`, `end`, each ISO 8601 with an offset) or recurring: an RFC 5545
`rrule` (python-dateutil) or a 5-field `cron` (cronsim), with a `duration` and an IANA
`timezone`. Recurring times are local wall-clock times in that zone, so a window at 02:30
Europe/Berlin stays at 02:30 local across daylight-saving changes. Where the local time does
not exist or exists twice, each syntax follows its own standard, and a window neither
disappears nor runs twice:

- spring forward (Berlin, last Sunday of March: 02:00 jumps to 03:00, so 02:30 does not exist):
  an rrule occurrence is read with the offset before the gap (RFC 5545 3.3.5, as calendars
  do): 02:30 is 03:30 CEST. A cron occurrence runs when the gap ends (Debian cron, cronsim):
  03:00 CEST. Either way the window lasts its whole duration from there.
- fall back (last Sunday of October: 03:00 goes back to 02:00, so 02:30 happens twice): both
  take the first 02:30 (CEST, 00:30 UTC), once; the second 02:30 (CET) starts nothing.

`duration` is elapsed time: a 2 h window is 2 h long even when the clock changes inside it.
Occurrences that overlap or touch merge into one stretch of maintenance.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from dateutil.rrule import WEEKLY, YEARLY, rrule, rruleset, rrulestr
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from engine.monitors import (
    ID_PATTERN,
    MAX_NAME_LENGTH,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    SpecError,
    _found_at,
    _has_nul,
    durations_of,
    read_document,
    yaml_files,
)

Mode = Literal["pause", "mute"]
MODES: tuple[Mode, ...] = ("pause", "mute")
MAX_MONITORS = 1_000
MAX_RRULE_LENGTH = 1_000
MAX_CRON_LENGTH = 100
MAX_ZONE_LENGTH = 64
MIN_DURATION_MS = 1_000
MAX_DURATION_MS = 31 * 86_400_000
# A one-off window longer than a year is a monitor to pause, not maintenance.
MAX_ONE_OFF_MS = 366 * 86_400_000
# Recurring windows come at most hourly: what a query walks stays small (a year of hourly
# windows is 8,784 occurrences), whatever the rule. Checked on the first SAMPLE occurrences.
MIN_SPACING_MS = 3_600_000
SAMPLE = 200
# A safety net for rules the sample cannot judge: no query walks more than this.
MAX_OCCURRENCES = 20_000
# An rrule's times lie within these years (see _parse_rrule).
EARLIEST = datetime(2000, 1, 1)
LATEST = datetime(2100, 1, 1)
# Local wall-clock times run up to a day away from UTC (and a zone's offset can jump by one):
# what is generated in local time covers the asked range with this margin, then is cut exactly.
MARGIN = timedelta(days=2)
_SUBSECOND_FREQ = re.compile(r"FREQ\s*=\s*(SECONDLY|MINUTELY)", re.IGNORECASE)
_DTSTART = re.compile(r"^\s*DTSTART[:;]", re.IGNORECASE | re.MULTILINE)

Tag = Annotated[str, Field(max_length=MAX_TAG_LENGTH)]


# A definition read from files: a maintenance window, a status page.
Defined = TypeVar("Defined", bound=BaseModel)


def _problem(field: str, reason: str) -> PydanticCustomError:
    # Raised where the model has no field location: the context names the field (errors()).
    return PydanticCustomError("window", "{reason}", {"field": field, "reason": reason})


def errors(exc: ValidationError, whole: str = "window") -> list[tuple[str, str]]:
    """(field, message) per problem of a window (or another definition: `whole` names it
    where a problem is about all of it); fields are dotted paths like `monitors.2`."""
    out = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        if named := err.get("ctx", {}).get("field"):
            where = f"{where}.{named}" if where else named
        out.append((where or f"({whole})", err["msg"]))
    return out


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def _at(ms: int, zone: ZoneInfo | None = None) -> datetime:
    return datetime.fromtimestamp(ms / 1000, zone or UTC)


class Window(BaseModel):
    """One maintenance window as written (a `maintenance:` entry, an API body)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=ID_PATTERN)]
    name: str = Field(default="", max_length=MAX_NAME_LENGTH)
    # pause: checks are not dispatched; mute: they run, flagged, and alert no one.
    mode: Mode = "mute"
    # A monitor is in the window when its id is listed or it has one of the tags.
    monitors: list[Annotated[str, Field(pattern=ID_PATTERN)]] = Field(
        default_factory=list, max_length=MAX_MONITORS)
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    rrule: str | None = Field(default=None, min_length=1, max_length=MAX_RRULE_LENGTH)
    cron: str | None = Field(default=None, min_length=1, max_length=MAX_CRON_LENGTH)
    duration_ms: int | None = Field(default=None, ge=MIN_DURATION_MS, le=MAX_DURATION_MS)
    timezone: str | None = Field(default=None, min_length=1, max_length=MAX_ZONE_LENGTH)

    @model_validator(mode="before")
    @classmethod
    def _prepared(cls, data: Any) -> Any:
        # Valid JSON and YAML, but no Postgres text can hold it (engine.monitors does the same).
        if (where := _found_at(data, _has_nul)) is not None:
            raise _problem(where or "(window)", "a NUL character cannot be stored")
        return durations_of(data, ("duration",))

    @model_validator(mode="after")
    def _consistent(self) -> Window:
        if not self.monitors and not self.tags:
            raise _problem("monitors", "name the monitors (ids) or tags the window covers")
        if self.rrule is None and self.cron is None:
            self._one_off()
        else:
            self._recurring()
        return self

    def _one_off(self) -> None:
        for name in ("duration_ms", "timezone"):
            if getattr(self, name) is not None:
                raise _problem(name, "only a recurring window (rrule or cron) has one")
        if self.start is None or self.end is None:
            missing = "start" if self.start is None else "end"
            raise _problem(missing, "a one-off window needs start and end; a recurring one "
                                    "rrule or cron, duration and timezone")
        if self.end <= self.start:
            raise _problem("end", f"end ({self.end.isoformat()}) is not after start "
                                  f"({self.start.isoformat()})")
        if self.end - self.start > timedelta(milliseconds=MAX_ONE_OFF_MS):
            raise _problem("end", "a one-off window lasts at most 366 days")

    def _recurring(self) -> None:
        if self.rrule is not None and self.cron is not None:
            raise _problem("cron", "give rrule or cron, not both")
        for name in ("start", "end"):
            if getattr(self, name) is not None:
                raise _problem(name, "a recurring window starts by its rrule or cron; start "
                                     "and end are for a one-off window")
        if self.duration_ms is None:
            raise _problem("duration", "a recurring window needs a duration, like 2h")
        if self.timezone is None:
            raise _problem("timezone", "a recurring window needs an IANA zone, like "
                                       "Europe/Berlin")
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise _problem("timezone", f"{self.timezone!r} is not an IANA time zone") from None
        if self.rrule is not None:
            _parse_rrule(self.rrule)
        else:
            _check_cron(self.cron or "", zone)
        self._check_spacing()

    def _check_spacing(self) -> None:
        field = "rrule" if self.rrule is not None else "cron"
        first = self._first_start()
        if first is None:
            return
        starts = sorted(set(self._starts(first, first + 400 * 86_400_000, SAMPLE)))
        for before, after in itertools.pairwise(starts):
            if after - before < MIN_SPACING_MS:
                raise _problem(field, f"occurrences {(after - before) // 60_000} min apart; a "
                                      "window recurs at most hourly")

    def _first_start(self) -> int | None:
        """Where the spacing sample begins: the rule's DTSTART, or now for a cron line."""
        if self.rrule is not None:
            first = self._rule.after(EARLIEST, inc=True)
            return None if first is None else _ms(first.replace(tzinfo=self._zone))
        return _ms(datetime.now(UTC))

    @cached_property
    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone or "UTC")

    @cached_property
    def _rule(self) -> rruleset:
        return _parse_rrule(self.rrule or "")

    @cached_property
    def _cursor(self) -> _Cursor:
        return _Cursor(self._rule)

    def covers(self, monitor_id: str, tags: Iterable[str]) -> bool:
        return monitor_id in self.monitors or not set(self.tags).isdisjoint(tags)

    def _starts(self, lo_ms: int, hi_ms: int, limit: int = MAX_OCCURRENCES) -> Iterator[int]:
        """Start times (epoch ms) of the recurring occurrences in about [lo, hi): local
        wall-clock times generated with MARGIN each side, read in the zone as the module's
        docstring says; at most `limit`."""
        lo, hi = _at(lo_ms, self._zone) - MARGIN, _at(hi_ms, self._zone) + MARGIN
        if self.rrule is not None:
            for local in self._cursor.between(lo.replace(tzinfo=None), hi.replace(tzinfo=None),
                                              limit):
                # fold=0: the first of two 02:30s; in a gap, the offset before it (RFC 5545).
                yield _ms(local.replace(tzinfo=self._zone, fold=0))
            return
        for moment in itertools.islice(CronSim(self.cron or "", lo), limit):
            if moment > hi:
                return
            yield _ms(moment)

    def occurrences(self, lo_ms: int, hi_ms: int) -> list[tuple[int, int]]:
        """(start, end) epoch ms of the stretches of this window that overlap [lo, hi), in
        order, overlapping or touching occurrences merged."""
        if self.start is not None and self.end is not None:
            spans = [(_ms(self.start), _ms(self.end))]
        else:
            duration = self.duration_ms or 0
            spans = [(s, s + duration) for s in sorted(set(self._starts(lo_ms - duration,
                                                                        hi_ms)))]
        merged: list[tuple[int, int]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return [(s, e) for s, e in merged if s < hi_ms and e > lo_ms]

    def active(self, now_ms: int) -> int | None:
        """The end (epoch ms) of the stretch of this window `now_ms` falls in, or None."""
        # Far enough for the stretch now is in (a chain of occurrences past a day ends early
        # here; the keeper asks again at that end).
        reach = (self.duration_ms or 0) + 86_400_000 if self.start is None else MAX_ONE_OFF_MS
        for start, end in self.occurrences(now_ms, now_ms + reach):
            if start <= now_ms < end:
                return end
        return None

    def next_change(self, now_ms: int, horizon_ms: int) -> int | None:
        """The first start or end after `now_ms` and before `now_ms + horizon_ms`, or None."""
        edges = (edge for span in self.occurrences(now_ms, now_ms + horizon_ms)
                 for edge in span if now_ms < edge < now_ms + horizon_ms)
        return min(edges, default=None)

    def upcoming(self, now_ms: int, count: int) -> list[tuple[int, int]]:
        """The current stretch (if any) and the next ones, at most `count`, within a year."""
        return self.occurrences(now_ms, now_ms + 366 * 86_400_000)[:count]


def _parse_rrule(text: str) -> rruleset:
    """The rule, refused when it would cost a query more than about a second. dateutil looks
    for a next occurrence up to the year 9999, whatever UNTIL says, so a rule that never
    matches walks 8,000 years: half a second by year, 15 s by day (FREQ=DAILY;BYMONTH=2;
    BYMONTHDAY=30). Such day filters are caught by the same filter yearly; what is left
    (an INTERVAL that misses its BYDAY) costs a second or two, once, and is then refused."""
    if _SUBSECOND_FREQ.search(text):
        raise _problem("rrule", "FREQ=SECONDLY and FREQ=MINUTELY recur too often for "
                                "maintenance; a window recurs at most hourly")
    if not _DTSTART.search(text):
        raise _problem("rrule", "needs a DTSTART line (local time in `timezone`), like "
                                "DTSTART:20260301T023000 then RRULE:FREQ=DAILY")
    try:
        rule = rrulestr(text, forceset=True)
    # dateutil's parser raises whatever its input trips over (ValueError, TypeError,
    # IndexError, KeyError ...); every one of them means the text is not a rule.
    except Exception as exc:
        raise _problem("rrule", f"not an RFC 5545 rule: {exc}") from None
    assert isinstance(rule, rruleset)  # forceset
    # A set's parts are these attributes of dateutil's (the same since 2.0, untyped in its
    # stubs): read to check their times and their day filters.
    raw: Any = rule
    parts: list[Any] = [*raw._rrule, *raw._exrule]
    moments: list[datetime] = [r._dtstart for r in parts] + raw._rdate + raw._exdate
    if any(m.tzinfo is not None for m in moments):
        raise _problem("rrule", "DTSTART (and any RDATE, EXDATE) is local time in `timezone`: "
                                "write it without TZID or Z")
    # Every query walks from DTSTART (an hourly rule from 2000 is 230,000 occurrences).
    if not all(EARLIEST <= m < LATEST for m in moments):
        raise _problem("rrule", f"DTSTART (and any RDATE, EXDATE) must be between "
                                f"{EARLIEST.year} and {LATEST.year}")
    for part in raw._rrule:
        if part._freq >= WEEKLY and part._bysetpos:
            raise _problem("rrule", "BYSETPOS is for FREQ=MONTHLY or YEARLY")
        if part._freq >= WEEKLY and not _some_day(part):
            raise _problem("rrule", "its BYMONTH, BYMONTHDAY, BYYEARDAY, BYWEEKNO and BYDAY "
                                    "match no day")
    if rule.after(EARLIEST, inc=True) is None:
        raise _problem("rrule", "the rule has no occurrence")
    return rule


def _some_day(part: Any) -> bool:
    """Whether a weekly, daily or hourly rule's day filters match any day: the same filters
    on a yearly rule, which walks years, not days (8,000 of them when none matches)."""
    filters = {"bymonth": part._bymonth, "byyearday": part._byyearday,
               "byweekno": part._byweekno, "byweekday": part._byweekday,
               "byeaster": part._byeaster,
               "bymonthday": (*part._bymonthday, *part._bynmonthday) or None}
    given = {k: v for k, v in filters.items() if v}
    if not given.keys() - {"bymonth"}:
        return True  # no day filter but months, or none: every such month has days
    yearly = rrule(YEARLY, dtstart=part._dtstart.replace(hour=0, minute=0, second=0),
                   **given)
    return yearly.after(EARLIEST, inc=True) is not None


class _Cursor:
    """A rule's local start times, walked forward and kept from the last query's start on.
    The keeper asks about now every few seconds, and now only moves on: each occurrence since
    DTSTART is generated once, not at every query (an hourly rule from 2000 has 230,000).
    A query starting before the kept ones walks again from DTSTART."""

    def __init__(self, rule: rruleset) -> None:
        self.rule = rule
        self.floor: datetime | None = None
        self.kept: list[datetime] = []
        self.rest: Iterator[datetime] = iter(())

    def between(self, lo: datetime, hi: datetime, limit: int) -> list[datetime]:
        if self.floor is None or lo < self.floor:
            self.rest = iter(self.rule.xafter(lo, inc=True))
            self.kept = []
        self.floor = lo
        del self.kept[:bisect.bisect_left(self.kept, lo)]
        while (not self.kept or self.kept[-1] <= hi) and len(self.kept) < limit:
            following = next(self.rest, None)
            if following is None:
                break
            if following >= lo:  # the walk may still be behind: from DTSTART to here
                self.kept.append(following)
        return [moment for moment in self.kept if moment <= hi]


def _check_cron(text: str, zone: ZoneInfo) -> None:
    if len(text.split()) != 5:
        raise _problem("cron", "expected 5 fields: minute hour day-of-month month day-of-week")
    try:
        CronSim(text, datetime.now(zone))
    except CronSimError as exc:
        raise _problem("cron", f"not a cron line: {exc}") from None


def in_effect(windows: Sequence[Window], monitors: Mapping[str, Iterable[str]],
              now_ms: int) -> dict[str, str]:
    """Monitor id -> `mode:end ms` for every monitor (id -> its tags) inside a window now, as
    engine.keys.Keys.maintenance holds it. Pause wins over mute (no check beats a muted
    one); the end is the latest end among the windows of that mode."""
    active = [(w, end) for w in windows if (end := w.active(now_ms)) is not None]
    out: dict[str, tuple[int, int]] = {}
    if not active:
        return {}
    for monitor_id, tags in monitors.items():
        tag_set = set(tags)
        for window, end in active:
            if window.covers(monitor_id, tag_set):
                rank = MODES.index(window.mode)  # pause 0, mute 1: the lower wins
                best = out.get(monitor_id)
                if best is None or rank < best[0] or (rank == best[0] and end > best[1]):
                    out[monitor_id] = (rank, end)
    return {mid: f"{MODES[rank]}:{end}" for mid, (rank, end) in out.items()}


def next_change(windows: Sequence[Window], now_ms: int, horizon_ms: int) -> int | None:
    """The first time after `now_ms` (within the horizon) at which any window starts or ends."""
    return min((t for w in windows if (t := w.next_change(now_ms, horizon_ms)) is not None),
               default=None)


def covered_ms(windows: Sequence[Window], lo_ms: int, hi_ms: int) -> int:
    """How much of [lo, hi) falls inside any of the windows, overlaps counted once."""
    spans = sorted((max(s, lo_ms), min(e, hi_ms)) for w in windows
                   for s, e in w.occurrences(lo_ms, hi_ms))
    total, reached = 0, lo_ms
    for start, end in spans:
        start = max(start, reached)
        if end > start:
            total += end - start
            reached = end
    return total


def load_section(path: str, key: str, model: type[Defined], prefix: str,
                 plural: str) -> list[Defined]:
    """The `key:` lists of a file, or of every *.yaml / *.yml file under a directory (the
    files `vigil monitors apply` reads; a file without one has none): every entry validated
    as `model`, ids unique across all, before returning. A SpecError lists every problem,
    each starting with `prefix` and naming the file, the entry and the field."""
    problems: list[str] = []
    found: list[Defined] = []
    origin: dict[str, Path] = {}
    for file in yaml_files(path):
        try:
            doc = read_document(file)
        except SpecError as exc:
            problems.extend(exc.problems)
            continue
        entries = doc.get(key, []) if isinstance(doc, dict) else []
        if not isinstance(entries, list):
            problems.append(f"{file}: `{key}:` must be a list of {plural}")
            continue
        for index, entry in enumerate(entries):
            ident = entry.get("id") if isinstance(entry, dict) else None
            label = f"{ident!r} ({file}: {key}[{index}])" if ident else f"{file}: {key}[{index}]"
            try:
                item = model.model_validate(entry)
            except ValidationError as exc:
                problems.extend(f"{prefix} {label}: {f}: {m}" for f, m in errors(exc, prefix))
                continue
            item_id = getattr(item, "id")  # noqa: B009  # every definition has one
            if item_id in origin:
                problems.append(f"{prefix} {label}: id: also defined in {origin[item_id]}")
            origin[item_id] = file
            found.append(item)
    if problems:
        raise SpecError(problems)
    return found


def load_path(path: str) -> list[Window]:
    """The maintenance windows of the files `vigil monitors apply` reads."""
    return load_section(path, "maintenance", Window, "maintenance", "windows")
