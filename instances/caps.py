"""Caps in effect (DESIGN §4): what a chip may send per hour and per business day, and how many new contacts it
may take per rolling 24 h. One status-aware rule, used by the reservation, the candidate query, the admin and
the API:

- a production chip (active, cooling): the operator's per-chip override in its ChipCapacity row, else the
  settings (MAX_MSGS_PER_HOUR, MAX_MSGS_PER_DAY, MAX_NEW_CONTACTS_PER_DAY);
- a warming chip, and a ready chip (it keeps talking at its final phase's volume until it is promoted): the
  plan of its warming phase, as the warmer registers it at start-up (`register_phase_caps`). It is read when
  asked and never copied into the capacity row, so a promotion changes the caps by itself and an operator's
  override waits in the row for the chip to reach production;
- any other chip: nothing (0): it does not send.

The rule is written once, as a list of branches (`_branches`). `caps_in_effect` evaluates it for one chip in
Python; `caps_annotations` compiles the same branches into SQL CASE expressions for a query.

Usage counts the same way in both languages: a counter counts only while its window (this hour, this
business day) is the current one, so a missed reset never blocks a chip nor lets it pass a cap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime

from django.conf import settings
from django.db.models import Case, F, IntegerField, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from chips.models import Chip
from instances import hours
from instances.models import ChipCapacity

S = Chip.Status
PRODUCTION_STATES: tuple[str, ...] = tuple(Chip.PRODUCTION_STATES)
PHASE_PLAN_STATES: tuple[str, ...] = (S.WARMING, S.READY)


@dataclass(frozen=True)
class Caps:
    per_hour: int
    per_day: int
    new_contacts_per_day: int


NO_CAPS = Caps(per_hour=0, per_day=0, new_contacts_per_day=0)
CAP_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Caps))
# Each cap's per-chip operator override in ChipCapacity (production chips only).
OVERRIDE_FIELDS: dict[str, str] = {
    "per_hour": "max_per_hour",
    "per_day": "max_per_day",
    "new_contacts_per_day": "max_new_contacts_per_day",
}


def production_defaults() -> Caps:
    return Caps(per_hour=settings.MAX_MSGS_PER_HOUR, per_day=settings.MAX_MSGS_PER_DAY,
                new_contacts_per_day=settings.MAX_NEW_CONTACTS_PER_DAY)


# --- the warming phases' caps: owned by the warmer, which sits above instances (DESIGN §11) ---------------

PhaseCapsProvider = Callable[[], Mapping[str, Caps]]
_phase_caps: PhaseCapsProvider = dict


def register_phase_caps(provider: PhaseCapsProvider) -> None:
    """Called once by the warmer's AppConfig.ready(): `provider()` maps each warming phase to its caps."""
    global _phase_caps
    _phase_caps = provider


# --- the rule ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Branch:
    """Chips in `statuses` (and, when set, in warming `phase`) have `caps`; an overridable branch lets the
    capacity row's non-empty override fields win."""

    statuses: tuple[str, ...]
    phase: str | None
    caps: Caps
    overridable: bool

    def matches(self, status: str, phase: str | None) -> bool:
        return status in self.statuses and (self.phase is None or self.phase == phase)

    def value(self, cap: str, capacity: ChipCapacity | None) -> int:
        override = getattr(capacity, OVERRIDE_FIELDS[cap]) if self.overridable and capacity is not None else None
        return override if override is not None else getattr(self.caps, cap)

    def condition(self, chip_path: str) -> Q:
        q = Q(**{f"{chip_path}status__in": self.statuses})
        return q & Q(**{f"{chip_path}warming_phase": self.phase}) if self.phase is not None else q

    def expression(self, cap: str, capacity_path: str):
        default = Value(getattr(self.caps, cap))
        return Coalesce(F(f"{capacity_path}{OVERRIDE_FIELDS[cap]}"), default) if self.overridable else default


def _branches(statuses: Iterable[str] | None = None) -> list[_Branch]:
    """The rule's branches, first match wins; only those that can apply to `statuses` (None: all), so a query
    over production chips never reads the phase plans."""
    wanted = None if statuses is None else set(statuses)
    branches: list[_Branch] = []
    if wanted is None or wanted & set(PRODUCTION_STATES):
        branches.append(_Branch(PRODUCTION_STATES, None, production_defaults(), overridable=True))
    if wanted is None or wanted & set(PHASE_PLAN_STATES):
        branches += [_Branch(PHASE_PLAN_STATES, phase, caps, overridable=False)
                     for phase, caps in _phase_caps().items()]
    return branches


def caps_in_effect(chip: Chip, capacity: ChipCapacity | None = None) -> Caps:
    """The caps that hold for `chip` now (its status, its warming phase, its capacity row if it has one)."""
    for branch in _branches([chip.status]):
        if branch.matches(chip.status, chip.warming_phase):
            return Caps(**{cap: branch.value(cap, capacity) for cap in CAP_NAMES})
    return NO_CAPS


def caps_annotations(*, chip_path: str = "", capacity_path: str = "capacity__",
                     statuses: Iterable[str] | None = None) -> dict[str, Case]:
    """`cap_per_hour`, `cap_per_day`, `cap_new_contacts_per_day` for a query: the same rule as `caps_in_effect`.

    `chip_path` / `capacity_path` lead from the queried model to the chip and to its ChipCapacity ("" and
    "capacity__" on chips, "chip__" and "" on capacities). `statuses`: the only statuses the query can see.
    """
    branches = _branches(statuses)
    return {
        f"cap_{cap}": Case(*[When(b.condition(chip_path), then=b.expression(cap, capacity_path)) for b in branches],
                           default=Value(0), output_field=IntegerField())
        for cap in CAP_NAMES
    }


# --- usage in the current windows ------------------------------------------------------------------------

def hour_window(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0)


def day_window(now: datetime) -> date:
    return hours.business_day(now)


@dataclass(frozen=True)
class Usage:
    hour: int
    day: int


# usage name → (window field, count field, the current window at `now`)
_WINDOWS: dict[str, tuple[str, str, Callable[[datetime], object]]] = {
    "hour": ("hour_window", "hour_count", hour_window),
    "day": ("day_window", "day_count", day_window),
}


def usage_now(capacity: ChipCapacity | None, now: datetime) -> Usage:
    """What the chip has used of this hour and this business day (a counter of an older window is 0)."""
    if capacity is None:
        return Usage(hour=0, day=0)
    return Usage(**{name: getattr(capacity, count) if getattr(capacity, window) == current(now) else 0
                    for name, (window, count, current) in _WINDOWS.items()})


def usage_annotations(now: datetime, *, capacity_path: str = "capacity__") -> dict[str, Case]:
    """`used_hour`, `used_day` for a query: the same rule as `usage_now`."""
    return {
        f"used_{name}": Case(When(**{f"{capacity_path}{window}": current(now)}, then=F(f"{capacity_path}{count}")),
                             default=Value(0), output_field=IntegerField())
        for name, (window, count, current) in _WINDOWS.items()
    }


def capacity_summary(chip: Chip, now: datetime | None = None) -> dict[str, object]:
    """The chip API's `capacity` section: the caps in effect, this hour's and today's usage, the restriction."""
    capacity = ChipCapacity.objects.filter(chip_id=chip.pk).first()
    caps, used = caps_in_effect(chip, capacity), usage_now(capacity, now or timezone.now())
    return {
        "per_hour": caps.per_hour, "per_day": caps.per_day, "new_contacts_per_day": caps.new_contacts_per_day,
        "used_this_hour": used.hour, "used_today": used.day,
        "restricted_until": capacity.restricted_until if capacity is not None else None,
    }
