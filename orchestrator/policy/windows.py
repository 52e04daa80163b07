"""R5 contact windows as pure functions: is a debtor reachable at an instant, and when is the next opening.

Nothing here reads a clock: the instant is always an argument. All instants must be timezone-aware; they
are judged by the local wall time in ``ContactWindows.timezone``, so a window of 08:00-21:00 means
08:00-21:00 on the debtor's clock on both sides of a daylight-saving switch.

Public holidays come from the ``holidays`` package for ``ContactWindows.holidays_country``. Only public
holidays count: Christmas Eve and New Year's Eve are ordinary days in Norway, and a plain Sunday is not a
holiday (it is closed because the default rules give it no window). Every calendar is asked for with
``include_sundays=False`` where the country supports that option, so the Norwegian calendar never reports
every Sunday as a holiday, whatever the package's default.

DST (``next_opening``):

* A window start on a day whose clock jumps forward across it (e.g. a 02:30 start on the last Sunday in
  March in Oslo) does not exist on that day. The window then opens at the first valid instant after the
  missing start, i.e. the moment the clock jumps (03:00 CEST), which is the earliest instant at which
  ``is_open`` is true. We deliberately do not use ``fold=0`` arithmetic (which would give 03:30), as that
  would hide half an hour of the window. A window lying wholly inside the gap does not occur that day.
* A window start in the repeated hour when the clock goes back occurs twice; the earliest occurrence
  not before ``at`` is returned.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

import holidays

from orchestrator.policy.rules import ContactWindows

SEARCH_DAYS = 366
"""How far ``next_opening`` and ``next_business_day`` look ahead before giving up."""

# Every real UTC offset lies within -12:00..+14:00; this margin makes a UTC range surely cover a local day.
_OFFSET_MARGIN = timedelta(hours=15)


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"a timezone-aware datetime is required, got naive {at.isoformat()}")


@lru_cache(maxsize=256)
def _holiday_dates(country: str, year: int) -> frozenset[date]:
    """The public holidays of ``country`` in ``year``, never counting ordinary Sundays."""
    try:
        calendar = holidays.country_holidays(country, years=year, include_sundays=False)
    except NotImplementedError as exc:
        raise ValueError(f"the holidays package has no calendar for country {country!r}") from exc
    except (TypeError, ValueError):
        # The country has no include_sundays option (holidays 0.109 raises ValueError; TypeError is guarded
        # too), so its calendar never adds Sundays in the first place.
        calendar = holidays.country_holidays(country, years=year)
    return frozenset(day for day in calendar if day.year == year)


def is_public_holiday(day: date, windows: ContactWindows) -> bool:
    """Whether ``day`` is a public holiday in ``windows.holidays_country``.

    Ignores ``closed_on_public_holidays``. A Sunday is a holiday only if it is a named one (Easter Sunday).
    """
    return day in _holiday_dates(windows.holidays_country, day.year)


def _is_open_day(day: date, windows: ContactWindows) -> bool:
    """The day has a window and is not closed as a public holiday."""
    if windows.window_for_weekday(day.weekday()) is None:
        return False
    return not (windows.closed_on_public_holidays and is_public_holiday(day, windows))


def is_open(at: datetime, windows: ContactWindows) -> bool:
    """Whether a debtor may be contacted at the instant ``at``; a naive datetime raises ``ValueError``.

    Open iff the local day (in the windows' zone) has a window, is not a public holiday (when
    ``closed_on_public_holidays``), and ``start <= local wall time < end``.
    """
    _require_aware(at)
    local = at.astimezone(windows.zone)
    day = local.date()
    window = windows.window_for_weekday(day.weekday())
    if window is None or not _is_open_day(day, windows):
        return False
    return window.start <= local.time() < window.end


def _wall_instants(day: date, wall: time, windows: ContactWindows) -> list[datetime]:
    """Instants whose local wall time is ``day`` + ``wall``: none in a DST gap, two in a repeated hour."""
    zone = windows.zone
    found: list[datetime] = []
    for fold in (0, 1):
        candidate = datetime.combine(day, wall.replace(fold=fold), tzinfo=zone)
        round_trip = candidate.astimezone(UTC).astimezone(zone)
        if round_trip.replace(tzinfo=None, fold=0) == candidate.replace(tzinfo=None, fold=0):
            found.append(round_trip)
    return found


def _offset_changes(day: date, windows: ContactWindows) -> list[datetime]:
    """The instant (to the second) at which the zone's UTC offset changes around the local ``day``, if any.

    Assumes at most one change within the ~2.5 days examined, which holds for every real time zone.
    """
    zone = windows.zone
    low = int((datetime.combine(day, time(), tzinfo=UTC) - _OFFSET_MARGIN).timestamp())
    high = int((datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC) + _OFFSET_MARGIN).timestamp())
    before = datetime.fromtimestamp(low, zone).utcoffset()
    if before == datetime.fromtimestamp(high, zone).utcoffset():
        return []
    # Invariant: the offset at ``low`` is ``before`` and the offset at ``high`` is not.
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == before:
            low = middle
        else:
            high = middle
    return [datetime.fromtimestamp(high, zone)]


def next_opening(at: datetime, windows: ContactWindows) -> datetime:
    """The earliest instant ``>= at`` at which ``is_open`` is true.

    Returns ``at`` itself, unchanged, when it is open; otherwise an aware datetime in the windows' zone
    (``ZoneInfo``), e.g. 08:00 local with the offset valid on that date. For a window start missing because
    the clock jumps forward, the opening is the moment of the jump (see the module docstring). Looks at most
    ``SEARCH_DAYS`` days ahead and raises ``ValueError("no contact window within a year")`` if nothing
    opens. A naive ``at`` raises ``ValueError``.
    """
    _require_aware(at)
    if is_open(at, windows):
        return at
    first_day = at.astimezone(windows.zone).date()
    for offset in range(SEARCH_DAYS + 1):
        day = first_day + timedelta(days=offset)
        window = windows.window_for_weekday(day.weekday())
        if window is None or not _is_open_day(day, windows):
            continue
        # An opening is either the wall clock reaching ``start`` or the clock jumping (DST) into the window.
        candidates = _wall_instants(day, window.start, windows) + _offset_changes(day, windows)
        # Compare in UTC: aware datetimes sharing a tzinfo compare by wall time and ignore ``fold``.
        not_before = at.astimezone(UTC)
        opens = [
            candidate
            for candidate in candidates
            if candidate.astimezone(UTC) >= not_before
            and candidate.date() == day
            and is_open(candidate, windows)
        ]
        if opens:
            return min(opens, key=lambda candidate: candidate.astimezone(UTC))
    raise ValueError("no contact window within a year")


def next_business_day(day: date, windows: ContactWindows) -> date:
    """``day`` itself if it has a contact window and is not a closed public holiday, else the next such date.

    A "contact day". Payment deadlines use ``decide.payment_deadline`` instead, which also skips Saturdays.
    By this definition a Saturday counts whenever the rules give Saturday a window. Raises
    ``ValueError`` if there is no such date within ``SEARCH_DAYS`` days.
    """
    for offset in range(SEARCH_DAYS + 1):
        candidate = day + timedelta(days=offset)
        if _is_open_day(candidate, windows):
            return candidate
    raise ValueError("no business day within a year")
