"""Caps in effect (DESIGN §4): what a chip may send per hour and per business day, and how many new contacts it
may take per rolling 24 h. One status-aware rule, used by the reservation, the candidate query, the admin and
the API:

- a production chip (active, cooling): the operator's per-chip override in its ChipCapacity row, else the
  settings (MAX_MSGS_PER_HOUR, MAX_MSGS_PER_DAY); its new contacts per 24 h are its growing allowance: the step
  of NEW_CONTACT_ALLOWANCE_STEPS its capacity row is at (`allowance_step`; no row: the first step), or a flat
  MAX_NEW_CONTACTS_PER_DAY when the ladder is empty;
- a warming chip, and a ready chip (it keeps talking at its final phase's volume until it is promoted): the
  plan of its warming phase, as the warmer registers it at start-up (`register_phase_caps`). It is read when
  asked and never copied into the capacity row, so a promotion changes the caps by itself and an operator's
  override waits in the row for the chip to reach production;
- any other chip: nothing (0): it does not send.

The rule is written once, as a list of branches (`_branches`). `caps_in_effect` evaluates it for one chip in
Python; `caps_annotations` compiles the same branches into SQL CASE expressions for a query. A message kind's share
of the hourly cap (instances.kinds) is `kind_hour_cap` in Python and `kind_hour_cap_expression` in SQL.

Usage counts the same way in both languages: a counter counts only while its window (this hour, this
business day) is the current one, so a missed reset never blocks a chip nor lets it pass a cap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime

from django.conf import settings
from django.core.signals import setting_changed
from django.db.models import Case, ExpressionWrapper, F, IntegerField, Q, Value, When
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce
from django.utils import timezone

from chips.models import Chip
from common.texts import Text, from_row
from instances import hours
from instances.kinds import MESSAGE_KINDS, kind_policy
from instances.models import NEW_CONTACT_BUCKETS, ChipCapacity

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


def allowance_steps() -> tuple[int, ...]:
    """The new-contact allowance ladder of production chips (one step: a flat cap)."""
    return tuple(settings.NEW_CONTACT_ALLOWANCE_STEPS) or (settings.MAX_NEW_CONTACTS_PER_DAY,)


def allowance_for(step: int | None) -> int:
    """The new contacts per 24 h at `step` of the ladder (None, no capacity row: the first step)."""
    steps = allowance_steps()
    return steps[min(max(step or 0, 0), len(steps) - 1)]


def production_defaults(step: int | None = None) -> Caps:
    return Caps(per_hour=settings.MAX_MSGS_PER_HOUR, per_day=settings.MAX_MSGS_PER_DAY,
                new_contacts_per_day=allowance_for(step))


# --- the warming phases' caps: owned by the warmer, which sits above instances (DESIGN §11) ---------------

PhaseCapsProvider = Callable[[], Mapping[str, Caps]]
_phase_caps: PhaseCapsProvider = dict


def register_phase_caps(provider: PhaseCapsProvider) -> None:
    """Called once by the warmer's AppConfig.ready(): `provider()` maps each warming phase to its caps."""
    global _phase_caps
    _phase_caps = provider


# --- the rule ------------------------------------------------------------------------------------------

LADDER_CAP = "new_contacts_per_day"


@dataclass(frozen=True)
class _Branch:
    """Chips in `statuses` (and, when set, in warming `phase`) have `caps`; an overridable branch lets the
    capacity row's non-empty override fields win; a branch with a `ladder` takes its new-contacts cap from the
    capacity row's allowance step."""

    statuses: tuple[str, ...]
    phase: str | None
    caps: Caps
    overridable: bool
    ladder: tuple[int, ...] = ()

    def matches(self, status: str, phase: str | None) -> bool:
        return status in self.statuses and (self.phase is None or self.phase == phase)

    def value(self, cap: str, capacity: ChipCapacity | None) -> int:
        override = getattr(capacity, OVERRIDE_FIELDS[cap]) if self.overridable and capacity is not None else None
        if override is not None:
            return override
        if cap == LADDER_CAP and self.ladder:
            return allowance_for(capacity.allowance_step if capacity is not None else None)
        return getattr(self.caps, cap)

    def condition(self, chip_path: str) -> Q:
        q = Q(**{f"{chip_path}status__in": self.statuses})
        return q & Q(**{f"{chip_path}warming_phase": self.phase}) if self.phase is not None else q

    def expression(self, cap: str, capacity_path: str):
        default = Value(getattr(self.caps, cap))
        if cap == LADDER_CAP and self.ladder:
            # allowance_for() in SQL: the highest step the row reached (past the top: the top), else the first
            # (no capacity row: NULL matches nothing).
            last = len(self.ladder) - 1
            default = Case(*[When(**{f"{capacity_path}allowance_step__gte": i}, then=Value(self.ladder[i]))
                             for i in range(last, 0, -1)],
                           default=Value(self.ladder[0]), output_field=IntegerField())
        return Coalesce(F(f"{capacity_path}{OVERRIDE_FIELDS[cap]}"), default) if self.overridable else default


def _branches(statuses: Iterable[str] | None = None) -> list[_Branch]:
    """The rule's branches, first match wins; only those that can apply to `statuses` (None: all), so a query
    over production chips never reads the phase plans."""
    wanted = None if statuses is None else set(statuses)
    branches: list[_Branch] = []
    if wanted is None or wanted & set(PRODUCTION_STATES):
        branches.append(_Branch(PRODUCTION_STATES, None, production_defaults(), overridable=True,
                                ladder=allowance_steps()))
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


def rule_version(statuses: Iterable[str] | None, kind: str | None) -> tuple:
    """What the rule's SQL holds besides the moment: the branches' caps (settings, the warming plans) and the
    kind's policy. Part of the key of a compiled capacity statement (common.statements), so a changed plan or
    setting compiles a new one. A version without the warming plans (production chips: every route decision asks
    for it) holds settings only, and is kept until a setting changes."""
    key = (statuses if statuses is None else tuple(statuses), kind)
    version = _settings_versions.get(key)
    if version is None:
        version = tuple(_branches(statuses)), kind_policy(kind) if kind is not None else None
        if statuses is not None and not set(key[0]) & set(PHASE_PLAN_STATES):
            _settings_versions[key] = version
    return version


_settings_versions: dict[tuple, tuple] = {}
setting_changed.connect(lambda **_: _settings_versions.clear(), weak=False, dispatch_uid="caps.rule_version")


def caps_annotations(*, chip_path: str = "", capacity_path: str = "capacity__",
                     statuses: Iterable[str] | None = None) -> dict[str, Case]:
    """`cap_per_hour`, `cap_per_day`, `cap_new_contacts_per_day` for a query: the same rule as `caps_in_effect`.

    `chip_path` / `capacity_path` lead from the queried model to the chip and to its ChipCapacity ("" and
    "capacity__" on chips, "chip__" and "" on capacities). `statuses`: the only statuses the query can see.
    """
    branches = _branches(statuses)
    if statuses is not None and len(branches) == 1 and branches[0].phase is None \
            and set(statuses) <= set(branches[0].statuses):  # the one branch holds for every row: no CASE
        return {f"cap_{cap}": branches[0].expression(cap, capacity_path) for cap in CAP_NAMES}
    return {
        f"cap_{cap}": Case(*[When(b.condition(chip_path), then=b.expression(cap, capacity_path)) for b in branches],
                           default=Value(0), output_field=IntegerField())
        for cap in CAP_NAMES
    }


def kind_hour_cap(caps: Caps, kind: str) -> int:
    """How many messages of `kind` the chip may send this hour: its share of the hourly cap (instances.kinds)."""
    return kind_policy(kind).hour_cap(caps.per_hour)


def kind_hour_cap_expression(kind: str, *, cap_per_hour: str = "cap_per_hour") -> ExpressionWrapper:
    """`kind_hour_cap` in SQL, over a query annotated with `caps_annotations` (integer division: the same floor)."""
    share = kind_policy(kind).hourly_share
    return ExpressionWrapper(F(cap_per_hour) * Value(share) / Value(100), output_field=IntegerField())


# --- usage in the current windows ------------------------------------------------------------------------

def hour_window(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0)


def day_window(now: datetime) -> date:
    return hours.business_day(now)


@dataclass(frozen=True)
class Usage:
    hour: int
    day: int
    hour_prospecting: int = 0
    hour_follow_up: int = 0
    hour_reply: int = 0

    def of_kind(self, kind: str) -> int:
        """This hour's messages of one kind."""
        return getattr(self, f"hour_{kind}")


# usage name → (window field, count field, the current window at `now`)
_WINDOWS: dict[str, tuple[str, str, Callable[[datetime], object]]] = {
    "hour": ("hour_window", "hour_count", hour_window),
    "day": ("day_window", "day_count", day_window),
    **{f"hour_{kind}": ("hour_window", f"hour_{kind}", hour_window) for kind in MESSAGE_KINDS},
}


def usage_now(capacity: ChipCapacity | None, now: datetime) -> Usage:
    """What the chip has used of this hour and this business day (a counter of an older window is 0)."""
    if capacity is None:
        return Usage(hour=0, day=0)
    return Usage(**{name: getattr(capacity, count) if getattr(capacity, window) == current(now) else 0
                    for name, (window, count, current) in _WINDOWS.items()})


def epoch_hour(now: datetime) -> int:
    return int(now.timestamp()) // 3600


def new_contact_bucket(now: datetime) -> int:
    """The bucket (0-based) this hour's new contacts go to."""
    return epoch_hour(now) % NEW_CONTACT_BUCKETS


def new_contacts_used(capacity: ChipCapacity | None, now: datetime) -> int:
    """New contacts the chip took in the rolling 24 h (this hour and the 24 before it: its buckets of those
    hours). The SQL twin: `new_contacts_annotation`."""
    if capacity is None:
        return 0
    since = epoch_hour(now) - NEW_CONTACT_BUCKETS
    return sum(n for n, h in zip(capacity.new_contact_counts, capacity.new_contact_hours, strict=False) if h > since)


def new_contacts_annotation(now: datetime, *, table: str = ChipCapacity._meta.db_table) -> RawSQL:
    """`new_contacts_used` in SQL, over a query whose `table` is the capacity row: one term per bucket, written
    out (a plain expression costs PostgreSQL a third of an unnest-and-sum subquery, and the router evaluates it
    on every candidate row)."""
    since = epoch_hour(now) - NEW_CONTACT_BUCKETS
    terms = " + ".join(f"CASE WHEN {table}.new_contact_hours[{i}] > %s "
                       f"THEN COALESCE({table}.new_contact_counts[{i}], 0) ELSE 0 END"
                       for i in range(1, NEW_CONTACT_BUCKETS + 1))
    return RawSQL(f"({terms})", [since] * NEW_CONTACT_BUCKETS, output_field=IntegerField())


def new_contacts_room(cap: str = "cap_new_contacts_per_day") -> Q:
    """The new-contact cap holds, over a query annotated with `new_used` (`new_contacts_annotation`) and the cap:
    the total of every bucket (`new_contact_total`, one column, written with the buckets) is under it, or else the
    rolling count is. The total is never below the rolling count, so its test only spares PostgreSQL the
    per-bucket sum on a chip far from its cap (evaluated first: an OR is tried in order); it never lets a chip
    pass the cap."""
    return Q(new_contact_total__lt=F(cap)) | Q(new_used__lt=F(cap))


def moments(now: datetime) -> dict[str, object]:
    """Every value a capacity statement derives from `now` (common.statements reuses compiled statements by
    matching their parameters to these)."""
    hour = epoch_hour(now)
    return {"now": now, "hour_window": hour_window(now), "day_window": day_window(now), "epoch_hour": hour,
            "since_hour": hour - NEW_CONTACT_BUCKETS, "bucket": hour % NEW_CONTACT_BUCKETS + 1}


def usage_annotations(now: datetime, *, capacity_path: str = "capacity__") -> dict[str, Case]:
    """`used_hour`, `used_day`, `used_hour_<kind>` for a query: the same rule as `usage_now`."""
    return {
        f"used_{name}": Case(When(**{f"{capacity_path}{window}": current(now)}, then=F(f"{capacity_path}{count}")),
                             default=Value(0), output_field=IntegerField())
        for name, (window, count, current) in _WINDOWS.items()
    }


def allowance_summary(chip: Chip, capacity: ChipCapacity | None) -> dict[str, object]:
    """The new-contact allowance as the admin and the API show it: the step (1-based), the ladder, and why."""
    steps = allowance_steps()
    step = min(capacity.allowance_step if capacity is not None else 0, len(steps) - 1)
    overridden = capacity is not None and capacity.max_new_contacts_per_day is not None
    return {
        "step": step + 1, "steps": list(steps), "allowance": steps[step],
        "reason": (from_row(capacity.allowance_reason_code, capacity.allowance_reason_params, capacity.allowance_reason)
                   if capacity is not None and capacity.allowance_reason else Text("brain.entered_production"))
        if chip.status in PRODUCTION_STATES else Text("allowance.not_in_production"),
        "changed_at": capacity.allowance_changed_at if capacity is not None else None,
        "overridden": overridden,
    }


def capacity_summary(chip: Chip, now: datetime | None = None) -> dict[str, object]:
    """The chip API's `capacity` section: the caps in effect, this hour's and today's usage, the restriction, each
    kind's share of this hour, the new-contact allowance step and why it is there."""
    capacity = ChipCapacity.objects.filter(chip_id=chip.pk).first()
    caps, used = caps_in_effect(chip, capacity), usage_now(capacity, now or timezone.now())
    allowance = allowance_summary(chip, capacity)
    return {
        "per_hour": caps.per_hour, "per_day": caps.per_day, "new_contacts_per_day": caps.new_contacts_per_day,
        "used_this_hour": used.hour, "used_today": used.day,
        "restricted_until": capacity.restricted_until if capacity is not None else None,
        "kinds": {kind: {"per_hour": kind_hour_cap(caps, kind), "used_this_hour": used.of_kind(kind),
                         "min_trust": kind_policy(kind).min_trust} for kind in MESSAGE_KINDS},
        "new_contacts_step": allowance["step"], "new_contacts_steps": allowance["steps"],
        "new_contacts_reason": allowance["reason"],
    }
