"""R5 contact windows: ``is_open``, ``next_opening`` and ``next_business_day`` against the packaged rules.

Every expected instant is compared in UTC *and* by ``utcoffset()``: aware datetimes that share a tzinfo
compare (and subtract) by wall time and ignore ``fold``, so ``==`` alone would not catch a wrong DST offset.

Facts about the Norwegian calendar used below, as the ``holidays`` package reports them (asserted in
``test_holiday_calendar_assumptions``): Easter 2026 is 2-6 April and the clocks go forward on Sunday 29 March
2026 and back on Sunday 25 October 2026; Easter 2027 is 25-29 March (Maundy Thursday, Good Friday, Easter
Monday are holidays, Easter Saturday is not) and the clocks go forward on Easter Sunday 28 March 2027;
Ascension Day is 14 May 2026 and 6 May 2027; Whit Monday is 25 May 2026 and 17 May 2027 (the same day as
Constitution Day); 1 May 2027 is a Saturday; Christmas Eve and New Year's Eve are not public holidays.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest

from orchestrator.policy.rules import ContactWindows, Window, load_rules
from orchestrator.policy.windows import is_open, is_public_holiday, next_business_day, next_opening

OSLO = ZoneInfo("Europe/Oslo")
WINDOWS = load_rules().contact_windows


def oslo(year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, fold: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=OSLO, fold=fold)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def assert_same_instant(actual: datetime, expected: datetime) -> None:
    assert actual.tzinfo is not None
    assert actual.astimezone(UTC) == expected.astimezone(UTC), (
        f"{actual.isoformat()} != {expected.isoformat()}"
    )
    assert actual.utcoffset() == expected.utcoffset(), f"{actual.isoformat()} != {expected.isoformat()}"


# (at, open?, expected next_opening; None means "at itself")
CASES = [
    # Weekdays, 08:00-21:00 with the end exclusive.
    pytest.param(oslo(2026, 11, 24, 0, 0), False, oslo(2026, 11, 24, 8, 0), id="tue-midnight"),
    pytest.param(oslo(2026, 11, 24, 7, 59), False, oslo(2026, 11, 24, 8, 0), id="tue-07:59"),
    pytest.param(oslo(2026, 11, 24, 8, 0), True, None, id="tue-08:00"),
    pytest.param(oslo(2026, 11, 24, 20, 59), True, None, id="tue-20:59"),
    pytest.param(
        datetime(2026, 11, 24, 20, 59, 59, 999999, tzinfo=OSLO), True, None, id="tue-last-microsecond"
    ),
    pytest.param(oslo(2026, 11, 24, 21, 0), False, oslo(2026, 11, 25, 8, 0), id="tue-21:00"),
    pytest.param(oslo(2026, 11, 27, 22, 30), False, oslo(2026, 11, 28, 9, 0), id="fri-22:30-to-sat"),
    # Saturdays, 09:00-15:00.
    pytest.param(oslo(2026, 11, 28, 8, 59), False, oslo(2026, 11, 28, 9, 0), id="sat-08:59"),
    pytest.param(oslo(2026, 11, 28, 9, 0), True, None, id="sat-09:00"),
    pytest.param(oslo(2026, 11, 28, 14, 59), True, None, id="sat-14:59"),
    pytest.param(oslo(2026, 11, 28, 15, 0), False, oslo(2026, 11, 30, 8, 0), id="sat-15:00-to-mon"),
    # Sundays have no window.
    pytest.param(oslo(2026, 11, 29, 12, 0), False, oslo(2026, 11, 30, 8, 0), id="sun-noon-to-mon"),
    pytest.param(oslo(2026, 11, 29, 23, 59), False, oslo(2026, 11, 30, 8, 0), id="sun-23:59-to-mon"),
    # 17 May 2027: Constitution Day and Whit Monday.
    pytest.param(oslo(2027, 5, 16, 21, 30), False, oslo(2027, 5, 18, 8, 0), id="whitsun-2027-to-tue"),
    pytest.param(oslo(2027, 5, 17, 10, 0), False, oslo(2027, 5, 18, 8, 0), id="17-may-2027"),
    # Whit Monday 2026.
    pytest.param(oslo(2026, 5, 23, 15, 0), False, oslo(2026, 5, 26, 8, 0), id="sat-before-whit-monday-2026"),
    pytest.param(oslo(2026, 5, 25, 12, 0), False, oslo(2026, 5, 26, 8, 0), id="whit-monday-2026"),
    # Ascension Day.
    pytest.param(oslo(2026, 5, 13, 21, 0), False, oslo(2026, 5, 15, 8, 0), id="eve-of-ascension-2026"),
    pytest.param(oslo(2026, 5, 14, 12, 0), False, oslo(2026, 5, 15, 8, 0), id="ascension-2026"),
    pytest.param(oslo(2027, 5, 6, 9, 0), False, oslo(2027, 5, 7, 8, 0), id="ascension-2027"),
    # Labour Day 2027 falls on a Saturday.
    pytest.param(oslo(2027, 5, 1, 10, 0), False, oslo(2027, 5, 3, 8, 0), id="1-may-2027-saturday"),
    # Easter 2027; Easter Saturday is an ordinary Saturday; the clocks go forward on Easter Sunday.
    pytest.param(oslo(2027, 3, 24, 21, 0), False, oslo(2027, 3, 27, 9, 0), id="wed-before-easter-2027"),
    pytest.param(oslo(2027, 3, 25, 10, 0), False, oslo(2027, 3, 27, 9, 0), id="maundy-thursday-2027"),
    pytest.param(oslo(2027, 3, 26, 10, 0), False, oslo(2027, 3, 27, 9, 0), id="good-friday-2027"),
    pytest.param(oslo(2027, 3, 27, 12, 0), True, None, id="easter-saturday-2027-open"),
    pytest.param(oslo(2027, 3, 27, 15, 0), False, oslo(2027, 3, 30, 8, 0), id="easter-saturday-to-tue"),
    pytest.param(oslo(2027, 3, 29, 12, 0), False, oslo(2027, 3, 30, 8, 0), id="easter-monday-2027"),
    # Easter 2026.
    pytest.param(oslo(2026, 4, 1, 21, 0), False, oslo(2026, 4, 4, 9, 0), id="wed-before-easter-2026"),
    pytest.param(oslo(2026, 4, 6, 7, 0), False, oslo(2026, 4, 7, 8, 0), id="easter-monday-2026"),
    # Christmas: the 24th is an ordinary Thursday in Norway, the 25th and 26th are holidays.
    pytest.param(oslo(2026, 12, 24, 7, 59), False, oslo(2026, 12, 24, 8, 0), id="christmas-eve-07:59"),
    pytest.param(oslo(2026, 12, 24, 8, 0), True, None, id="christmas-eve-08:00"),
    pytest.param(oslo(2026, 12, 24, 20, 59), True, None, id="christmas-eve-20:59"),
    pytest.param(oslo(2026, 12, 24, 21, 0), False, oslo(2026, 12, 28, 8, 0), id="christmas-eve-21:00"),
    pytest.param(oslo(2026, 12, 25, 12, 0), False, oslo(2026, 12, 28, 8, 0), id="christmas-day"),
    pytest.param(oslo(2026, 12, 26, 10, 0), False, oslo(2026, 12, 28, 8, 0), id="boxing-day-saturday"),
    # New Year: across a year boundary (a second holiday calendar) to a Saturday.
    pytest.param(oslo(2026, 12, 31, 12, 0), True, None, id="new-years-eve-open"),
    pytest.param(oslo(2026, 12, 31, 21, 0), False, oslo(2027, 1, 2, 9, 0), id="new-years-eve-21:00"),
    # DST: back on Sunday 25 October 2026, forward on Sunday 29 March 2026.
    pytest.param(oslo(2026, 10, 24, 16, 0), False, oslo(2026, 10, 26, 8, 0), id="dst-autumn-sat-16:00"),
    pytest.param(oslo(2026, 10, 25, 2, 30), False, oslo(2026, 10, 26, 8, 0), id="dst-autumn-02:30-first"),
    pytest.param(
        oslo(2026, 10, 25, 2, 30, fold=1), False, oslo(2026, 10, 26, 8, 0), id="dst-autumn-02:30-second"
    ),
    pytest.param(oslo(2026, 3, 28, 15, 30), False, oslo(2026, 3, 30, 8, 0), id="dst-spring-sat-15:30"),
    pytest.param(utc(2026, 3, 29, 1, 30), False, oslo(2026, 3, 30, 8, 0), id="dst-spring-in-the-jump"),
    pytest.param(oslo(2026, 3, 30, 7, 59), False, oslo(2026, 3, 30, 8, 0), id="dst-spring-monday-07:59"),
    # Input in other zones is judged on the Oslo clock.
    pytest.param(utc(2026, 11, 27, 21, 30), False, oslo(2026, 11, 28, 9, 0), id="utc-fri-22:30-oslo"),
    pytest.param(utc(2026, 11, 24, 6, 59), False, oslo(2026, 11, 24, 8, 0), id="utc-winter-07:59-oslo"),
    pytest.param(utc(2026, 11, 24, 7, 0), True, None, id="utc-winter-08:00-oslo"),
    pytest.param(utc(2026, 6, 15, 5, 59), False, oslo(2026, 6, 15, 8, 0), id="utc-summer-07:59-oslo"),
    pytest.param(utc(2026, 6, 15, 6, 0), True, None, id="utc-summer-08:00-oslo"),
    pytest.param(utc(2026, 6, 15, 19, 0), False, oslo(2026, 6, 16, 8, 0), id="utc-summer-21:00-oslo"),
    pytest.param(
        datetime(2026, 11, 27, 16, 30, tzinfo=ZoneInfo("America/New_York")),
        False,
        oslo(2026, 11, 28, 9, 0),
        id="new-york-fri-16:30",
    ),
]


@pytest.mark.parametrize(("at", "open_", "expected"), CASES)
def test_contact_windows(at: datetime, open_: bool, expected: datetime | None) -> None:
    assert is_open(at, WINDOWS) is open_
    result = next_opening(at, WINDOWS)
    if expected is None:
        assert result is at
    else:
        assert_same_instant(result, expected)
        assert result.tzinfo == OSLO
        assert is_open(result, WINDOWS)
        assert not is_open(result.astimezone(UTC) - timedelta(microseconds=1), WINDOWS)


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        pytest.param(date(2026, 11, 24), date(2026, 11, 24), id="tuesday"),
        pytest.param(date(2026, 11, 28), date(2026, 11, 28), id="saturday-has-a-window"),
        pytest.param(date(2026, 11, 29), date(2026, 11, 30), id="sunday"),
        pytest.param(date(2027, 5, 16), date(2027, 5, 18), id="whitsun-2027"),
        pytest.param(date(2027, 5, 17), date(2027, 5, 18), id="17-may-2027"),
        pytest.param(date(2026, 5, 17), date(2026, 5, 18), id="17-may-2026-sunday"),
        pytest.param(date(2026, 5, 14), date(2026, 5, 15), id="ascension-2026"),
        pytest.param(date(2027, 3, 25), date(2027, 3, 27), id="maundy-thursday-2027"),
        pytest.param(date(2027, 3, 28), date(2027, 3, 30), id="easter-sunday-2027"),
        pytest.param(date(2026, 12, 24), date(2026, 12, 24), id="christmas-eve"),
        pytest.param(date(2026, 12, 25), date(2026, 12, 28), id="christmas-day"),
        pytest.param(date(2027, 1, 1), date(2027, 1, 2), id="new-years-day"),
        pytest.param(date(2027, 5, 1), date(2027, 5, 3), id="1-may-2027-saturday"),
    ],
)
def test_next_business_day(day: date, expected: date) -> None:
    assert next_business_day(day, WINDOWS) == expected


@pytest.mark.parametrize(
    ("day", "holiday"),
    [
        pytest.param(date(2026, 4, 2), True, id="maundy-thursday-2026"),
        pytest.param(date(2026, 5, 14), True, id="ascension-2026"),
        pytest.param(date(2026, 5, 25), True, id="whit-monday-2026"),
        pytest.param(date(2027, 3, 25), True, id="maundy-thursday-2027"),
        pytest.param(date(2027, 3, 26), True, id="good-friday-2027"),
        pytest.param(date(2027, 3, 27), False, id="easter-saturday-2027"),
        pytest.param(date(2027, 3, 28), True, id="easter-sunday-2027"),
        pytest.param(date(2027, 3, 29), True, id="easter-monday-2027"),
        pytest.param(date(2027, 5, 6), True, id="ascension-2027"),
        pytest.param(date(2027, 5, 17), True, id="constitution-day-and-whit-monday-2027"),
        pytest.param(date(2026, 12, 24), False, id="christmas-eve"),
        pytest.param(date(2026, 12, 25), True, id="christmas-day"),
        pytest.param(date(2026, 12, 26), True, id="boxing-day"),
        pytest.param(date(2026, 12, 31), False, id="new-years-eve"),
        pytest.param(date(2026, 11, 29), False, id="ordinary-sunday"),
        pytest.param(date(2026, 3, 29), False, id="dst-sunday"),
    ],
)
def test_holiday_calendar_assumptions(day: date, holiday: bool) -> None:
    assert is_public_holiday(day, WINDOWS) is holiday
    assert (day in holidays.country_holidays("NO", years=day.year, include_sundays=False)) is holiday


def test_whit_monday_2027_is_constitution_day() -> None:
    names = holidays.country_holidays("NO", years=2027).get_list(date(2027, 5, 17))
    assert set(names) == {"Constitution Day", "Pentecost Monday"}


@pytest.mark.parametrize("function", [is_open, next_opening])
def test_naive_datetime_raises(function: Callable[[datetime, ContactWindows], object]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        function(datetime(2026, 11, 24, 12, 0), WINDOWS)


def custom(closed_on_public_holidays: bool = True, **days: tuple[time, time]) -> ContactWindows:
    return ContactWindows(
        closed_on_public_holidays=closed_on_public_holidays,
        days={name: Window(start=start, end=end) for name, (start, end) in days.items()},
    )


# Rule sets that put window edges inside the DST switch hours (never the case with the packaged rules).
SPRING_02_30 = custom(sunday=(time(2, 30), time(5, 0)))
SPRING_GAP_ONLY = custom(sunday=(time(2, 0), time(2, 59)))
AUTUMN_02_30 = custom(sunday=(time(2, 30), time(2, 45)))
AUTUMN_TO_02_15 = custom(sunday=(time(1, 0), time(2, 15)))
SUNDAY_ONLY = custom(sunday=(time(10, 0), time(12, 0)))
NO_HOLIDAYS = custom(False, monday=(time(8, 0), time(21, 0)), sunday=(time(10, 0), time(12, 0)))


@pytest.mark.parametrize(
    ("windows", "at", "open_", "expected"),
    [
        # 02:30 does not exist on 29 March 2026: the window opens when the clock jumps to 03:00 CEST.
        pytest.param(SPRING_02_30, oslo(2026, 3, 28, 12, 0), False, utc(2026, 3, 29, 1, 0), id="spring-gap"),
        pytest.param(SPRING_02_30, utc(2026, 3, 29, 0, 59), False, utc(2026, 3, 29, 1, 0), id="spring-01:59"),
        pytest.param(SPRING_02_30, utc(2026, 3, 29, 1, 0), True, None, id="spring-03:00-open"),
        # A window wholly inside the gap does not happen that day; 5 April 2026 is Easter Sunday.
        pytest.param(
            SPRING_GAP_ONLY, oslo(2026, 3, 28, 12, 0), False, oslo(2026, 4, 12, 2, 0), id="spring-gap-only"
        ),
        # 02:30 happens twice on 25 October 2026.
        pytest.param(
            AUTUMN_02_30, oslo(2026, 10, 24, 12, 0), False, utc(2026, 10, 25, 0, 30), id="autumn-1st"
        ),
        pytest.param(AUTUMN_02_30, oslo(2026, 10, 25, 2, 35), True, None, id="autumn-1st-open"),
        pytest.param(
            AUTUMN_02_30, oslo(2026, 10, 25, 2, 50), False, utc(2026, 10, 25, 1, 30), id="autumn-2nd"
        ),
        pytest.param(
            AUTUMN_02_30,
            oslo(2026, 10, 25, 2, 10, fold=1),
            False,
            utc(2026, 10, 25, 1, 30),
            id="autumn-2nd-b",
        ),
        # Closed at 02:20 CEST, open again when the clock goes back to 02:00 CET.
        pytest.param(
            AUTUMN_TO_02_15, oslo(2026, 10, 25, 2, 20), False, utc(2026, 10, 25, 1, 0), id="autumn-reopens"
        ),
        # An ordinary Sunday is not misreported as a holiday; Easter Sunday is one.
        pytest.param(SUNDAY_ONLY, oslo(2026, 11, 29, 11, 0), True, None, id="ordinary-sunday-open"),
        pytest.param(
            SUNDAY_ONLY, oslo(2027, 3, 27, 12, 0), False, oslo(2027, 4, 4, 10, 0), id="easter-sunday"
        ),
        # closed_on_public_holidays = false ignores the calendar.
        pytest.param(NO_HOLIDAYS, oslo(2027, 5, 17, 10, 0), True, None, id="holidays-off-17-may"),
        pytest.param(
            NO_HOLIDAYS, oslo(2027, 3, 28, 9, 0), False, oslo(2027, 3, 28, 10, 0), id="holidays-off-easter"
        ),
    ],
)
def test_custom_windows(
    windows: ContactWindows, at: datetime, open_: bool, expected: datetime | None
) -> None:
    assert is_open(at, windows) is open_
    result = next_opening(at, windows)
    if expected is None:
        assert result is at
        return
    assert_same_instant(result, expected.astimezone(OSLO))
    assert result.tzinfo == OSLO
    assert is_open(result, windows)
    assert not is_open(result.astimezone(UTC) - timedelta(microseconds=1), windows)


def test_spring_gap_opening_is_03_00_local() -> None:
    result = next_opening(oslo(2026, 3, 28, 12, 0), SPRING_02_30)
    assert (result.hour, result.minute, result.utcoffset()) == (3, 0, timedelta(hours=2))


def test_no_window_within_a_year() -> None:
    empty = ContactWindows(days={})
    with pytest.raises(ValueError, match="no contact window within a year"):
        next_opening(oslo(2026, 11, 24, 12, 0), empty)
    with pytest.raises(ValueError, match="within a year"):
        next_business_day(date(2026, 11, 24), empty)


@pytest.mark.parametrize(
    "start",
    [
        pytest.param(utc(2026, 3, 25), id="spring-2026-easter-and-dst"),
        pytest.param(utc(2026, 10, 21), id="autumn-2026-dst"),
        pytest.param(utc(2027, 3, 22), id="spring-2027-easter-on-dst"),
        pytest.param(utc(2026, 12, 22), id="christmas-new-year"),
    ],
)
def test_next_opening_matches_minute_by_minute_scan(start: datetime) -> None:
    """Cross-check against brute force: every window edge in the packaged rules is on a whole minute."""
    minutes = 16 * 24 * 60
    open_minutes = [is_open(start + timedelta(minutes=i), WINDOWS) for i in range(minutes)]
    next_open: list[int | None] = [None] * minutes
    following: int | None = None
    for i in range(minutes - 1, -1, -1):
        if open_minutes[i]:
            following = i
        next_open[i] = following
    for i in range(0, 12 * 24 * 60, 7):
        at = start + timedelta(minutes=i)
        expected = next_open[i]
        assert expected is not None
        result = next_opening(at, WINDOWS)
        assert result.astimezone(UTC) == start + timedelta(minutes=expected), at.isoformat()
        assert result is at if expected == i else result.tzinfo == OSLO
