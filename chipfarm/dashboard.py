"""The pool dashboard's data: a fixed number of queries, whatever the pool's size."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from chipfarm.forecast import reserve_forecast
from chipfarm.models import OrchestratorOperation, PoolConfiguration, PoolSnapshot
from chipfarm.orchestrator import bought_today
from chipfarm.pool import pool_status
from chips.models import Chip, ChipAlert
from instances.models import RoutingPolicy

CHART_STATES = [Chip.Status.ACTIVE, Chip.Status.READY, Chip.Status.WARMING, Chip.Status.DEGRADED,
                Chip.Status.BANNED]
CHART_COLOURS = {"active": "#198754", "ready": "#20c997", "warming": "#fd7e14", "degraded": "#ffc107",
                 "banned": "#dc3545"}
CHART_W, CHART_H = 720, 200


def dashboard_context(*, now: datetime | None = None) -> dict:
    now = now or timezone.now()
    config = PoolConfiguration.load()
    status = pool_status(config=config)
    policy = RoutingPolicy.objects.filter(pk=1).first() or RoutingPolicy()
    alerts = list(ChipAlert.objects.open().select_related("chip").order_by("-last_raised_at")[:15])
    open_alerts = ChipAlert.objects.open().count()
    operations = list(OrchestratorOperation.objects.select_related("chip", "target_chip")[:15])
    rows = [
        {"state": state.label, "key": state.value, "count": status.counts[state.value], "target": target}
        for state, target in [
            (Chip.Status.ACTIVE, f"{status.targets['production_min']}–{status.targets['production_max']}"),
            (Chip.Status.READY, f"≥ {status.targets['ready_min']}"),
            (Chip.Status.WARMING, f"{status.targets['warmup_buffer']} ({status.pipeline} in pipeline)"),
            (Chip.Status.COOLING, ""), (Chip.Status.DEGRADED, ""), (Chip.Status.PROVISIONING, ""),
            (Chip.Status.PENDING, ""), (Chip.Status.ACTIVATING, ""), (Chip.Status.BANNED, ""),
            (Chip.Status.RETIRED, ""),
        ]
    ]
    return {
        "status": status, "rows": rows, "policy": policy, "alerts": alerts, "open_alerts": open_alerts,
        "operations": operations, "chart": chart(now=now),
        "budget_left": max(0, config.provision_daily_budget - bought_today(now)),
        "default_area_code": config.default_area_code,
        # The reserve forecast (chipfarm.forecast): "runs short in N days; keep R ready and W warming".
        "forecast": reserve_forecast(now=now, config=config, counts=status.counts),
    }


def chart(*, now: datetime, days: int = 7) -> dict:
    """Series per state (10-minute buckets) from the snapshots of the last `days` days, as SVG polylines."""
    since = now - timedelta(days=days)
    snapshots = PoolSnapshot.objects.filter(taken_at__gte=since).order_by("taken_at").values_list("taken_at", "counts")
    hourly: dict[int, dict] = {}
    for taken_at, counts in snapshots:
        hourly[int((taken_at - since).total_seconds() // 600)] = counts  # the last snapshot of each bucket
    hours = days * 24 * 6
    peak = max([1] + [c.get(s, 0) for c in hourly.values() for s in CHART_STATES])
    lines = []
    for state in CHART_STATES:
        points = [
            f"{hour * CHART_W / hours:.1f},{CHART_H - counts.get(state, 0) * (CHART_H - 10) / peak:.1f}"
            for hour, counts in sorted(hourly.items())
        ]
        last = points[-1].split(",") if points else None
        lines.append({"state": state.value, "label": state.label, "colour": CHART_COLOURS[state.value],
                      "points": " ".join(points), "last_x": last[0] if last else None,
                      "last_y": last[1] if last else None})
    return {"lines": lines, "peak": peak, "width": CHART_W, "height": CHART_H, "samples": len(hourly),
            "since": since}  # samples: 10-minute buckets that have a snapshot
