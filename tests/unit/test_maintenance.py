"""engine.maintenance: when a window is on. A 02:30 Europe/Berlin window across both
daylight-saving changes of 2026 (Sunday 29 March: 02:00 jumps to 03:00; Sunday 25 October:
03:00 goes back to 02:00), as an rrule and as a cron line; one-off windows; which monitors a
window covers; and the validation errors, each naming its field."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.maintenance import Window, errors, in_effect, next_change

BERLIN = ZoneInfo("Europe/Berlin")
HOUR_MS = 3_600_000
RRULE = {"id": "nightly", "tags": ["db"], "rrule": "DTSTART:20260101T023000\nRRULE:FREQ=DAILY",
         "duration": "2h", "timezone": "Europe/Berlin"}
CRON = {"id": "nightly", "tags": ["db"], "cron": "30 2 * * *", "duration": "2h",
        "timezone": "Europe/Berlin"}


def ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def local_day(day: date) -> tuple[int, int]:
    """The epoch-ms bounds of a calendar day in Berlin (23 h in March, 25 h in October)."""
    start = datetime(day.year, day.month, day.day, tzinfo=BERLIN)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=BERLIN)
    return round(start.timestamp() * 1000), round(end.timestamp() * 1000)


def on(window: Window, day: date) -> list[tuple[int, int]]:
    """The occurrences that start on that Berlin calendar day."""
    lo, hi = local_day(day)
    return [(s, e) for s, e in window.occurrences(lo, hi) if lo <= s < hi]


@pytest.mark.parametrize(("definition", "spring_start"), [
    # RFC 5545 3.3.5: a local time in the gap is read with the offset before it.
    (RRULE, "2026-03-29T03:30:00+02:00"),
    # Debian cron (cronsim): a job in the gap runs when the gap ends.
    (CRON, "2026-03-29T03:00:00+02:00"),
])
def test_the_spring_day_keeps_its_window_with_its_whole_duration(
        definition: dict[str, Any], spring_start: str) -> None:
    window = Window.model_validate(definition)
    start = ms(spring_start)
    assert on(window, date(2026, 3, 29)) == [(start, start + 2 * HOUR_MS)]
    assert on(window, date(2026, 3, 28)) == [(ms("2026-03-28T02:30:00+01:00"),
                                              ms("2026-03-28T04:30:00+01:00"))]
    assert on(window, date(2026, 3, 30)) == [(ms("2026-03-30T02:30:00+02:00"),
                                              ms("2026-03-30T04:30:00+02:00"))]


@pytest.mark.parametrize("definition", [RRULE, CRON])
def test_the_autumn_day_runs_its_window_once_at_the_first_0230(
        definition: dict[str, Any]) -> None:
    window = Window.model_validate(definition)
    first = ms("2026-10-25T02:30:00+02:00")  # 00:30 UTC; the second 02:30 (CET) is 01:30 UTC
    # Two hours of elapsed time: 02:30 CEST to 03:30 CET on the wall clock.
    assert on(window, date(2026, 10, 25)) == [(first, first + 2 * HOUR_MS)]
    assert window.active(ms("2026-10-25T02:30:00+01:00")) == first + 2 * HOUR_MS
    assert window.active(ms("2026-10-25T03:30:00+01:00")) is None
    assert on(window, date(2026, 10, 26)) == [(ms("2026-10-26T02:30:00+01:00"),
                                               ms("2026-10-26T04:30:00+01:00"))]


@given(st.dates(min_value=date(2026, 1, 1), max_value=date(2036, 12, 31)),  # RRULE's DTSTART on
       st.sampled_from([RRULE, CRON]))
@settings(max_examples=300, deadline=None)
def test_every_day_has_exactly_one_window_at_0230_local_but_the_spring_day(
        day: date, definition: dict[str, Any]) -> None:
    window = Window.model_validate(definition)
    [(start, end)] = on(window, day)
    assert end - start == 2 * HOUR_MS
    local = datetime.fromtimestamp(start / 1000, BERLIN)
    spring = day.month == 3 and day.weekday() == 6 and day.day > 24  # the last Sunday
    expected = ((3, 30) if definition is RRULE else (3, 0)) if spring else (2, 30)
    assert (local.hour, local.minute) == expected


def test_active_and_the_changes_follow_the_occurrences() -> None:
    window = Window.model_validate(CRON)
    start = ms("2026-06-01T02:30:00+02:00")
    assert window.active(start - 1) is None
    assert window.active(start) == start + 2 * HOUR_MS
    assert window.active(start + 2 * HOUR_MS - 1) == start + 2 * HOUR_MS
    assert window.active(start + 2 * HOUR_MS) is None  # the end is not inside
    assert window.next_change(start - 1_000, 86_400_000) == start
    assert window.next_change(start, 86_400_000) == start + 2 * HOUR_MS
    assert window.next_change(start + 2 * HOUR_MS, 86_400_000) == start + 86_400_000
    assert window.next_change(start + 2 * HOUR_MS, HOUR_MS) is None


def test_overlapping_occurrences_are_one_stretch() -> None:
    window = Window.model_validate({**CRON, "cron": "0 */2 * * *", "duration": "3h"})
    midnight = ms("2026-06-01T00:00:00+02:00")
    assert window.occurrences(midnight, midnight + 6 * HOUR_MS)[0][1] > midnight + 6 * HOUR_MS


def test_a_one_off_window_is_on_from_its_start_until_its_end() -> None:
    window = Window.model_validate({"id": "move", "monitors": ["db"], "mode": "pause",
                                   "start": "2026-05-01T22:00:00+02:00",
                                   "end": "2026-05-01T21:30:00Z"})
    start, end = ms("2026-05-01T20:00:00Z"), ms("2026-05-01T21:30:00Z")
    assert window.occurrences(0, 2**45) == [(start, end)]
    assert [window.active(t) for t in (start - 1, start, end - 1, end)] == [
        None, end, end, None]
    assert window.next_change(0, 2**45) == start
    assert window.occurrences(end, 2**45) == []


def test_a_window_covers_its_monitors_by_id_and_by_tag() -> None:
    window = Window.model_validate({**CRON, "monitors": ["web"], "tags": ["db", "eu"]})
    assert window.covers("web", [])
    assert window.covers("pg", ["eu"])
    assert not window.covers("api", ["us", "dbx"])


def test_in_effect_is_the_hash_the_dispatch_script_reads() -> None:
    now = ms("2026-06-01T03:00:00+02:00")
    mute = Window.model_validate(CRON)  # 02:30 to 04:30, tag db
    pause = Window.model_validate({"id": "move", "monitors": ["pg"], "mode": "pause",
                                   "start": "2026-06-01T00:00:00Z", "end": "2026-06-01T03:00:00Z"})
    later = Window.model_validate({**CRON, "id": "later", "cron": "0 5 * * *"})
    monitors = {"pg": ["db"], "redis": ["db"], "web": ["front"]}
    assert in_effect([mute, pause, later], monitors, now) == {
        "pg": f"pause:{ms('2026-06-01T03:00:00Z')}",  # pause wins over mute
        "redis": f"mute:{ms('2026-06-01T04:30:00+02:00')}"}
    assert in_effect([later], monitors, now) == {}
    assert next_change([mute, pause, later], now, 86_400_000) == ms("2026-06-01T04:30:00+02:00")


def test_an_rrule_with_exdate_and_byday_is_read_in_the_zone() -> None:
    window = Window.model_validate({
        **RRULE, "rrule": "DTSTART:20260105T023000\nRRULE:FREQ=WEEKLY;BYDAY=MO\n"
                          "EXDATE:20260112T023000"})
    lo = ms("2026-01-05T00:00:00+01:00")
    starts = [datetime.fromtimestamp(s / 1000, UTC).isoformat()
              for s, _ in window.occurrences(lo, lo + 21 * 86_400_000)]
    assert starts == ["2026-01-05T01:30:00+00:00", "2026-01-19T01:30:00+00:00"]


@pytest.mark.parametrize(("change", "field", "says"), [
    ({"timezone": "Mars/Olympus"}, "timezone", "not an IANA time zone"),
    ({"timezone": "../../etc/passwd"}, "timezone", "not an IANA time zone"),
    ({"duration": "0s"}, "duration_ms", "greater than or equal to 1000"),
    ({"duration": "32d"}, "duration_ms", "less than or equal to"),
    ({"duration": "soon"}, "duration", "not a duration"),
    ({"cron": "61 2 * * *"}, "cron", "Bad minute"),
    ({"cron": "0 2 * *"}, "cron", "expected 5 fields"),
    ({"cron": "*/10 * * * *"}, "cron", "at most hourly"),
    ({"rrule": "DTSTART:20260101T023000\nRRULE:FREQ=DAILY;BYHOUR=25"}, "rrule", "hour"),
    ({"rrule": "DTSTART:20260101T023000\nRRULE:FREQ=FORTNIGHTLY"}, "rrule", "RFC 5545"),
    ({"rrule": "RRULE:FREQ=DAILY"}, "rrule", "DTSTART"),
    ({"rrule": "DTSTART;TZID=Europe/Berlin:20260101T023000\nRRULE:FREQ=DAILY"}, "rrule",
     "without TZID or Z"),
    ({"rrule": "DTSTART:20260101T023000\nRRULE:FREQ=MINUTELY"}, "rrule", "at most hourly"),
    ({"rrule": "x" * 1_001}, "rrule", "at most 1000 characters"),
    # Rules dateutil would walk to the year 9999 for, at every query.
    ({"rrule": "DTSTART:20260101T023000\nRRULE:FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30"}, "rrule",
     "match no day"),
    ({"rrule": "DTSTART:20260101T023000\nRRULE:FREQ=YEARLY;BYMONTH=4;BYMONTHDAY=31"}, "rrule",
     "no occurrence"),
    ({"rrule": "DTSTART:20260101T023000\nRRULE:FREQ=DAILY;BYSETPOS=3"}, "rrule",
     "BYSETPOS is for"),
    ({"rrule": "DTSTART:19990101T023000\nRRULE:FREQ=DAILY"}, "rrule", "between 2000 and 2100"),
    ({"tags": [], "monitors": []}, "monitors", "name the monitors"),
    ({"monitors": ["bad id"]}, "monitors.0", "pattern"),
    ({"tags": ["t"] * 33}, "tags", "at most 32"),
    ({"mode": "silence"}, "mode", "'pause' or 'mute'"),
    ({"start": "2026-01-01T00:00:00Z"}, "start", "start and end are for a one-off window"),
    ({"duration": None}, "duration", "needs a duration"),
    ({"timezone": None}, "timezone", "needs an IANA zone"),
    ({"rrule": "DTSTART:20260101T023000\nRRULE:FREQ=DAILY"}, "cron", "not both"),
    ({"colour": "red"}, "colour", "Extra inputs"),
])
def test_a_bad_recurring_window_names_the_field(change: dict[str, Any], field: str,
                                                says: str) -> None:
    base = RRULE if field == "rrule" else CRON
    definition = {k: v for k, v in {**base, **change}.items() if v is not None}
    with pytest.raises(ValidationError) as caught:
        Window.model_validate(definition)
    [(where, message)] = errors(caught.value)
    assert where == field
    assert says in message


@pytest.mark.parametrize(("change", "field", "says"), [
    ({"end": "2026-05-01T21:00:00+02:00"}, "end", "is not after start"),
    ({"end": "2027-06-01T00:00:00Z"}, "end", "at most 366 days"),
    ({"start": "2026-05-01T22:00:00"}, "start", "timezone info"),
    ({"end": None}, "end", "needs start and end"),
    ({"timezone": "UTC"}, "timezone", "only a recurring window"),
])
def test_a_bad_one_off_window_names_the_field(change: dict[str, Any], field: str,
                                              says: str) -> None:
    one_off = {"id": "move", "monitors": ["db"], "start": "2026-05-01T22:00:00+02:00",
               "end": "2026-05-02T01:00:00+02:00"}
    definition = {k: v for k, v in {**one_off, **change}.items() if v is not None}
    with pytest.raises(ValidationError) as caught:
        Window.model_validate(definition)
    [(where, message)] = errors(caught.value)
    assert where == field
    assert says in message


def test_queries_walking_forward_and_back_see_what_a_fresh_window_sees() -> None:
    """The rrule's cursor keeps its walk between queries (the keeper's, every few seconds);
    a query going back starts the walk again. Each answer equals a fresh window's."""
    definition = {**RRULE, "rrule": "DTSTART:20200101T000000\nRRULE:FREQ=HOURLY;INTERVAL=5",
                  "duration": "90m"}
    walked = Window.model_validate(definition)
    start = ms("2026-03-28T00:00:00+01:00")
    for step in (0, 1, 7, 30, 31, 2, 40):  # hours; 2 goes back
        t = start + step * HOUR_MS + 17 * 60_000
        fresh = Window.model_validate(definition)
        assert walked.active(t) == fresh.active(t)
        assert walked.next_change(t, 86_400_000) == fresh.next_change(t, 86_400_000)
        assert walked.occurrences(t, t + 86_400_000) == fresh.occurrences(t, t + 86_400_000)
