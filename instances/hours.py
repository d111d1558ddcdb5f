"""Business hours: 08:00–20:00 America/Sao_Paulo by default, Brazilian national holidays off."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays
from django.conf import settings


@lru_cache(maxsize=64)
def _national_holidays(year: int) -> holidays.HolidayBase:
    # National holidays only (no state or municipal subdivision): the pool serves the whole country.
    return holidays.country_holidays("BR", years=year)


@lru_cache(maxsize=4096)
def is_holiday(day: date) -> bool:
    return day in _national_holidays(day.year)


def business_tz() -> ZoneInfo:
    return ZoneInfo(settings.BUSINESS_TIMEZONE)


_tz = business_tz


def is_business_time(moment: datetime) -> bool:
    local = moment.astimezone(_tz())
    if is_holiday(local.date()):
        return False
    return settings.BUSINESS_HOURS_START <= local.time() < settings.BUSINESS_HOURS_END


def next_business_start(moment: datetime) -> datetime:
    """The next moment (>= `moment`) when sending is allowed, as an aware datetime."""
    tz = _tz()
    local = moment.astimezone(tz)
    if is_business_time(moment):
        return moment
    day = local.date()
    if local.time() >= settings.BUSINESS_HOURS_START and not is_holiday(day):
        day += timedelta(days=1)  # after today's closing time
    for _ in range(366):
        if not is_holiday(day):
            start = datetime.combine(day, settings.BUSINESS_HOURS_START, tzinfo=tz)
            if start >= moment:
                return start
        day += timedelta(days=1)
    raise RuntimeError("no business day within a year")  # pragma: no cover


def business_day(moment: datetime) -> date:
    """The local calendar day a daily cap counts in."""
    return moment.astimezone(_tz()).date()


def day_start(moment: datetime) -> datetime:
    """Midnight of the local business day that contains `moment` (daily budgets count from it)."""
    return datetime.combine(business_day(moment), datetime.min.time(), tzinfo=_tz())
