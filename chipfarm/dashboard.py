"""The pool dashboard's data: a fixed number of queries, whatever the pool's size.

What an operator opens first: health and counts against the targets, the chips that need attention, whether
sending is open (or closed for business hours, or paused by whom and why), the last hour's operations and alerts,
the pool over the last day (hourly) or week (daily), and the reserve forecast when there is one.

The forecast is another module's (chipfarm.forecast, when it exists): `dashboard_context(forecast=...)` takes a
dict, and by default asks `chipfarm.forecast.reserve_forecast()` if that can be imported. The page shows the
section only when a forecast came back. Its shape: ``{"summary": str, "rows": [{"label": str, "value": str}],
"as_of": datetime}``, every key optional; a dict with neither summary nor rows is shown as its items.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models.functions import Trunc
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from chipfarm import forecast as forecasting
from chipfarm.attention import attention_kinds
from chipfarm.models import OrchestratorOperation, PoolConfiguration, PoolSnapshot
from chipfarm.orchestrator import bought_today
from chipfarm.pool import pool_status
from chips.models import Chip, ChipAlert
from instances import hours
from instances.models import RoutingPolicy

logger = logging.getLogger(__name__)

CHART_STATES = [Chip.Status.ACTIVE, Chip.Status.READY, Chip.Status.WARMING, Chip.Status.DEGRADED,
                Chip.Status.BANNED]
CHART_COLOURS = {"active": "#198754", "ready": "#20c997", "warming": "#fd7e14", "degraded": "#ffc107",
                 "banned": "#dc3545"}
# The SVG's own coordinates; it is drawn at the card's full width (preserveAspectRatio="none").
CHART_W, CHART_H = 1000, 200
CHART_RANGES = {"day": ("hour", 24, timedelta(hours=1)), "week": ("day", 7, timedelta(days=1))}
ATTENTION_LIMIT = 8
RECENT_LIMIT = 15
HEALTH_LABELS = {"healthy": gettext_lazy("Healthy"), "attention": gettext_lazy("Needs attention"),
                 "critical": gettext_lazy("Critical")}
DEFICIT_LABELS = {"production": gettext_lazy("production"), "ready": gettext_lazy("ready reserve"),
                  "warming": gettext_lazy("warming buffer")}


def dashboard_context(*, now: datetime | None = None, chart_range: str = "day",
                      forecast: dict | None = None) -> dict:
    now = now or timezone.now()
    config = PoolConfiguration.load()
    status = pool_status(config=config)
    policy = RoutingPolicy.objects.filter(pk=1).first() or RoutingPolicy()
    hour_ago = now - timedelta(hours=1)
    alerts = list(ChipAlert.objects.open().select_related("chip").order_by("-last_raised_at")[:RECENT_LIMIT])
    rows = [
        {"state": state.label, "key": state.value, "count": status.counts[state.value], "target": target}
        for state, target in [
            (Chip.Status.ACTIVE, f"{status.targets['production_min']}–{status.targets['production_max']}"),
            (Chip.Status.READY, f"≥ {status.targets['ready_min']}"),
            (Chip.Status.WARMING, _("%(buffer)d (%(pipeline)d in the pipeline)")
             % {"buffer": status.targets["warmup_buffer"], "pipeline": status.pipeline}),
            (Chip.Status.COOLING, ""), (Chip.Status.DEGRADED, ""), (Chip.Status.PROVISIONING, ""),
            (Chip.Status.PENDING, ""), (Chip.Status.ACTIVATING, ""), (Chip.Status.BANNED, ""),
            (Chip.Status.RETIRED, ""),
        ]
    ]
    return {
        "status": status, "health_label": HEALTH_LABELS.get(status.health, status.health),
        "deficits": [(DEFICIT_LABELS.get(name, name), value) for name, value in status.deficits.items()],
        "rows": rows, "policy": policy, "sending": sending_state(policy, now),
        "attention": attention_groups(config=config, now=now),
        "alerts": alerts, "open_alerts": ChipAlert.objects.open().count(),
        "last_hour_operations": list(OrchestratorOperation.objects.select_related("chip", "target_chip")
                                     .filter(created_at__gte=hour_ago)[:RECENT_LIMIT]),
        "last_hour_alerts": list(ChipAlert.objects.select_related("chip").filter(last_raised_at__gte=hour_ago)
                                 .order_by("-last_raised_at")[:RECENT_LIMIT]),
        "chart": chart(now=now, chart_range=chart_range),
        # The reserve forecast (chipfarm.forecast): "runs short in N days; keep R ready and W warming".
        "forecast": forecast if forecast is not None else reserve_forecast(now=now, config=config,
                                                                            counts=status.counts),
        "budget_left": max(0, config.provision_daily_budget - bought_today(now)),
        "default_area_code": config.default_area_code,
    }


# --- needs attention ------------------------------------------------------------------------------------------

@dataclass
class AttentionGroup:
    key: str
    title: str
    chips: list[Chip]
    more: bool
    url: str


def attention_groups(*, config: PoolConfiguration, now: datetime) -> list[AttentionGroup]:
    """One bounded query per kind (chipfarm.attention); only the kinds that have chips."""
    groups = []
    changelist = reverse("admin:chips_chip_changelist")
    for kind, condition in attention_kinds(config.limits(), now):
        chips = list(Chip.objects.filter(condition).select_related("capacity").order_by("-updated_at", "-pk")
                     [:ATTENTION_LIMIT + 1])
        if chips:
            groups.append(AttentionGroup(key=kind.key, title=str(kind.title), chips=chips[:ATTENTION_LIMIT],
                                         more=len(chips) > ATTENTION_LIMIT, url=f"{changelist}?attention={kind.key}"))
    return groups


# --- sending ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SendingState:
    state: str  # open | closed | paused
    text: str
    since: str = ""  # paused: when, on the operators' clock


def _local_hhmm(moment: datetime, now: datetime) -> str:
    local, today = moment.astimezone(hours.business_tz()), now.astimezone(hours.business_tz()).date()
    text = formats.time_format(local, "H:i")
    if local.date() != today:
        text = f"{formats.date_format(local, 'D')} {formats.date_format(local, 'SHORT_DATE_FORMAT')} {text}"
    return text


def sending_state(policy: RoutingPolicy, now: datetime) -> SendingState:
    """Open, closed for business hours until HH:MM, or paused by whom and why."""
    if policy.is_paused:
        at = formats.date_format(timezone.localtime(policy.paused_at), "SHORT_DATETIME_FORMAT") if (
            policy.paused_at) else "?"
        return SendingState("paused", _("Sending is PAUSED by %(by)s since %(at)s: %(reason)s")
                            % {"by": policy.paused_by or "?", "at": at, "reason": policy.paused_reason or "?"},
                            since=at)
    if not hours.is_business_time(now):
        return SendingState("closed", _("Sending is closed outside business hours until %(until)s.")
                            % {"until": _local_hhmm(hours.next_business_start(now), now)})
    return SendingState("open", _("Sending is open (business hours until %(end)s).")
                        % {"end": formats.time_format(settings.BUSINESS_HOURS_END, "H:i")})


# --- the chart --------------------------------------------------------------------------------------------------

def chart(*, now: datetime, chart_range: str = "day") -> dict:
    """Per state, the pool at the end of each hour of the last day (or each day of the last week, São Paulo days),
    from the last snapshot in each bucket: one query returning at most 24 (or 7) rows."""
    unit, buckets, step = CHART_RANGES.get(chart_range, CHART_RANGES["day"])
    chart_range = chart_range if chart_range in CHART_RANGES else "day"
    tz = hours.business_tz()
    last = _bucket_start(now, unit, tz)
    starts = [last - step * (buckets - 1 - i) for i in range(buckets)]
    rows = (PoolSnapshot.objects.filter(taken_at__gte=starts[0])
            .annotate(bucket=Trunc("taken_at", unit, tzinfo=tz)).order_by("bucket", "-taken_at")
            .distinct("bucket").values_list("bucket", "counts"))
    by_bucket = {bucket: counts for bucket, counts in rows}
    values = [by_bucket.get(start) for start in starts]
    peak = max([1] + [c.get(s, 0) for c in values if c for s in CHART_STATES])
    x = [round(i * CHART_W / max(1, buckets - 1), 1) for i in range(buckets)]
    lines = []
    for state in CHART_STATES:
        points = [(x[i], round(CHART_H - c.get(state, 0) * (CHART_H - 10) / peak, 1))
                  for i, c in enumerate(values) if c is not None]
        latest = next((c.get(state, 0) for c in reversed(values) if c is not None), None)
        lines.append({"state": state.value, "label": state.label, "colour": CHART_COLOURS[state.value],
                      "points": " ".join(f"{px},{py}" for px, py in points), "latest": latest,
                      "last_x": points[-1][0] if points else None, "last_y": points[-1][1] if points else None})
    fmt = "H:i" if unit == "hour" else "D d/m"
    every = 3 if unit == "hour" else 1
    labels = [formats.date_format(start.astimezone(tz), fmt) if i % every == 0 or i == buckets - 1 else ""
              for i, start in enumerate(starts)]
    return {"lines": lines, "peak": peak, "width": CHART_W, "height": CHART_H, "range": chart_range,
            "samples": sum(1 for v in values if v is not None), "buckets": buckets, "labels": labels,
            "gridlines": [round(CHART_H - f * (CHART_H - 10), 1) for f in (0.25, 0.5, 0.75, 1.0)],
            "since": starts[0]}


def _bucket_start(moment: datetime, unit: str, tz) -> datetime:
    local = moment.astimezone(tz)
    if unit == "hour":
        return local.replace(minute=0, second=0, microsecond=0)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


# --- the reserve forecast (another module's) -------------------------------------------------------------------

def reserve_forecast(*, now: datetime, config: PoolConfiguration, counts: dict[str, int]) -> dict | None:
    """chipfarm.forecast's figures in the section's shape; None (no section) when it cannot be computed."""
    try:
        f = forecasting.reserve_forecast(now=now, config=config, counts=counts)
    except Exception:  # the dashboard must open even when the forecast cannot be computed
        logger.exception("the reserve forecast failed; the dashboard shows none")
        return None
    short = (_("not at this rate") if f.runs_short_in_days is None
             else ngettext("in %(n)d day", "in %(n)d days", f.runs_short_in_days) % {"n": f.runs_short_in_days})
    rows = [
        (_("Losses per week (bans and degradations, last %(n)d days)") % {"n": f.history_days},
         formats.number_format(f.losses_per_week, 1)),
        (_("Production runs short"), short),
        (_("Days from purchase to ready"), formats.number_format(f.lead_days, 1)),
        (_("Keep ready"), f"{f.keep_ready} ({_('now')} {f.ready})"),
        (_("Keep warming"), f"{f.keep_warming} ({_('now')} {f.warming})"),
        (_("Suggested reserve (ready minimum / warming buffer)"),
         f"{f.suggested_ready_min} / {f.suggested_warmup_buffer}"
         + (f" — {_('applied automatically')}" if f.auto_reserve else "")),
    ]
    return {"summary": f.message, "rows": [{"label": label, "value": value} for label, value in rows], "as_of": now}
