"""Celery entry points for the warmer: each calls one service."""

from __future__ import annotations

from datetime import datetime, timedelta

from celery import shared_task
from django.core.cache import cache
from django.utils import timezone


@shared_task(name="warmer.plan_day", ignore_result=True)
def plan_day() -> dict:
    """Every 30 minutes: plan today for warming chips not planned yet (idempotent)."""
    from warmer.services import warming_plan_day

    report = warming_plan_day()
    return {"day": report.day.isoformat(), "chips": report.chips, "actions": report.actions,
            "restarted": report.restarted, "holiday": report.holiday}


@shared_task(name="warmer.dispatch", ignore_result=True, soft_time_limit=50, time_limit=58)
def dispatch(limit: int = 100) -> dict:
    """Every minute: send the due warming actions, batch after batch (claimed with SKIP LOCKED; several workers
    are safe)."""
    from warmer.services import release_stale_claims, warming_dispatch_due

    release_stale_claims()
    report = warming_dispatch_due(limit=limit)
    return report.__dict__


@shared_task(name="warmer.recompute_trust", ignore_result=True)
def recompute_trust(chip_ids: list[int] | None = None, as_of: str | None = None) -> int:
    """Recompute trust for the given chips (all scored chips when None), as of an ISO time (default now)."""
    from warmer.services import trust_recompute

    return trust_recompute(chip_ids=chip_ids, as_of=datetime.fromisoformat(as_of) if as_of else None)


@shared_task(name="warmer.recompute_recent_trust", ignore_result=True)
def recompute_recent_trust() -> int:
    """Every 5 minutes: recompute the chips whose delivery events moved since the last run."""
    from warmer.services import trust_recompute_recent

    now = timezone.now()
    last = cache.get("warmer:trust_recent_at")
    since = datetime.fromisoformat(last) if last else now - timedelta(minutes=10)
    count = trust_recompute_recent(since=since, as_of=now)
    cache.set("warmer:trust_recent_at", now.isoformat(), timeout=None)
    return count
