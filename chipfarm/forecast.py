"""The reserve, sized by what really happens (W2 5/7).

From the last RESERVE_HISTORY_DAYS (30): how many ready or production chips were lost (banned or degraded) and how
long a bought line takes to become ready (activation: purchase → activated; warming: warming started → ready;
medians). With λ the losses per day:

    runs short in  = (active − production_min + ready) / λ days (the buffer the pool has, spent at that rate)
    keep ready   R = ⌈max(λ × RESERVE_COVER_DAYS, the worst 7 days seen)⌉   (a wave of bans never empties production)
    keep warming W = ⌈λ × lead time⌉                                         (what must be on its way to keep up)

`reserve_forecast()` is what the dashboard shows; with `auto_reserve` on, the cycle's `auto_reserve` step raises
ready_min and warmup_buffer toward R and W (never lowers them, never past the pool's reserve budget for
ready_min + warmup_buffer) and records each change as an operation. A fixed number of queries, whatever the pool's
size.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from chipfarm.models import OrchestratorOperation, PoolConfiguration
from chipfarm.pool import state_counts
from chips.models import Chip, ChipTransition
from common.texts import Text, stored

S = Chip.Status
WEEK = timedelta(days=7)
LEAD_SAMPLES_MAX = 500


@dataclass(frozen=True)
class ReserveForecast:
    history_days: int
    bans: int
    degradations: int
    losses_per_week: float
    worst_week: int
    activation_days: float
    warming_days: float
    lead_days: float
    lead_samples: int           # chips whose purchase → ready was measured (0: the configured warm-up days)
    active: int
    ready: int
    warming: int                # warming, plus the pipeline on its way to warming
    production_min: int
    runs_short_in_days: int | None  # None: no losses, production does not run short at this rate
    keep_ready: int
    keep_warming: int
    ready_min: int
    warmup_buffer: int
    budget: int
    suggested_ready_min: int    # what auto_reserve sets: toward the forecast, within the budget, never lower
    suggested_warmup_buffer: int
    auto_reserve: bool
    message: str

    def as_dict(self) -> dict:
        return asdict(self)


def _worst_week(moments: list[datetime]) -> int:
    moments = sorted(moments)
    worst, start = 0, 0
    for end, moment in enumerate(moments):
        while moment - moments[start] >= WEEK:
            start += 1
        worst = max(worst, end - start + 1)
    return worst


def _days(delta: timedelta) -> float:
    return max(delta.total_seconds(), 0.0) / 86400


def reserve_forecast(*, now: datetime | None = None, config: PoolConfiguration | None = None,
                     counts: dict[str, int] | None = None) -> ReserveForecast:
    """The forecast for the dashboard (see module docstring): three queries (two with `counts` given)."""
    now = now or timezone.now()
    config = config or PoolConfiguration.load()
    counts = counts if counts is not None else state_counts()
    days = max(settings.RESERVE_HISTORY_DAYS, 1)
    since = now - timedelta(days=days)
    losses = list(
        ChipTransition.objects.filter(created_at__gte=since, created_at__lte=now, source__in=Chip.DEGRADABLE_STATES,
                                      target__in=[S.BANNED, S.DEGRADED])
        .values_list("target", "created_at")
    )
    bans = sum(1 for target, _at in losses if target == S.BANNED)
    per_day = len(losses) / days
    leads = list(
        Chip.objects.filter(source=Chip.Source.SALVY, ready_at__gte=since, ready_at__lte=now,
                            activated_at__isnull=False, warming_started_at__isnull=False)
        .order_by("-ready_at").values_list("created_at", "activated_at", "warming_started_at", "ready_at")
        [:LEAD_SAMPLES_MAX]
    )
    if leads:
        activation = statistics.median(_days(activated - created) for created, activated, _w, _r in leads)
        warming = statistics.median(_days(ready - started) for _c, _a, started, ready in leads)
    else:
        activation, warming = 1.0, float(config.warmup_days)
    lead = activation + warming
    active, ready = counts.get(S.ACTIVE, 0), counts.get(S.READY, 0)
    warming_now = counts.get(S.WARMING, 0) + sum(counts.get(s, 0) for s in Chip.PIPELINE_STATES)
    worst = _worst_week([at for _target, at in losses])
    if per_day > 0:
        runs_short: int | None = max(0, math.floor((active - config.production_min + ready) / per_day))
        keep_ready = math.ceil(max(per_day * settings.RESERVE_COVER_DAYS, worst))
        keep_warming = math.ceil(per_day * lead)
    else:
        runs_short, keep_ready, keep_warming = None, 0, 0
    budget = config.reserve_budget
    room = max(0, budget - config.ready_min - config.warmup_buffer)
    more_ready = min(max(0, keep_ready - config.ready_min), room)
    more_warming = min(max(0, keep_warming - config.warmup_buffer), room - more_ready)
    if runs_short is None:
        message = _("No chip was banned or degraded in the last %(days)d days: the reserve targets stand.") % {
            "days": days}
    else:
        message = _("At this rate (%(rate).1f lost a week) production runs short in %(n)d days; keep %(r)d ready and "
                    "%(w)d warming.") % {"rate": per_day * 7, "n": runs_short, "r": keep_ready, "w": keep_warming}
        if keep_ready + keep_warming > max(budget, config.ready_min + config.warmup_buffer):
            message += " " + _("The reserve budget (%(budget)d) keeps it lower.") % {"budget": budget}
    return ReserveForecast(
        history_days=days, bans=bans, degradations=len(losses) - bans, losses_per_week=round(per_day * 7, 2),
        worst_week=worst, activation_days=round(activation, 2), warming_days=round(warming, 2),
        lead_days=round(lead, 2), lead_samples=len(leads), active=active, ready=ready, warming=warming_now,
        production_min=config.production_min, runs_short_in_days=runs_short, keep_ready=keep_ready,
        keep_warming=keep_warming, ready_min=config.ready_min, warmup_buffer=config.warmup_buffer, budget=budget,
        suggested_ready_min=config.ready_min + more_ready, suggested_warmup_buffer=config.warmup_buffer + more_warming,
        auto_reserve=config.auto_reserve, message=message,
    )


def auto_reserve(config: PoolConfiguration, now: datetime) -> int:
    """The cycle's reserve step: with auto_reserve on, raise ready_min / warmup_buffer to the forecast's suggestion
    (within the budget) and record it. Returns 1 when the targets changed."""
    if not config.auto_reserve or config._state.adding:
        return 0
    forecast = reserve_forecast(now=now, config=config)
    new = (forecast.suggested_ready_min, forecast.suggested_warmup_buffer)
    old = (config.ready_min, config.warmup_buffer)
    if new == old:
        return 0
    reason = Text("op.reserve_targets", ready_before=old[0], ready_after=new[0], buffer_before=old[1],
                  buffer_after=new[1], losses=forecast.losses_per_week, lead=forecast.lead_days)
    with transaction.atomic():
        PoolConfiguration.objects.filter(pk=config.pk).update(ready_min=new[0], warmup_buffer=new[1], updated_at=now)
        OrchestratorOperation.objects.create(
            kind=OrchestratorOperation.Kind.RESERVE_TARGETS, **stored("reason", reason, 300),
            metadata={"before": {"ready_min": old[0], "warmup_buffer": old[1]},
                      "after": {"ready_min": new[0], "warmup_buffer": new[1]}, "forecast": forecast.as_dict()})
    config.ready_min, config.warmup_buffer = new
    return 1
