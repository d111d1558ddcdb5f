"""Celery entry points for the pool: each takes ids and calls one service."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from chipfarm.client import SalvyError
from instances.gateway import GatewayError

logger = logging.getLogger(__name__)
PROVISION_BACKOFF = (30, 60, 120)


@shared_task(name="chipfarm.run_cycle", ignore_result=True, soft_time_limit=50, time_limit=58)
def run_cycle() -> dict:
    """Every 60 s: one orchestrator cycle (skips itself if another one holds the lock)."""
    from chipfarm.orchestrator import run_cycle as cycle

    report = cycle()
    return {"ran": report.ran, "steps": report.steps, "errors": report.errors, "health": report.health}


@shared_task(name="chipfarm.provision_chip", bind=True, acks_late=True, max_retries=len(PROVISION_BACKOFF))
def provision_chip(self, chip_id: int) -> str:
    """Buy a line and create its instance; Salvy/Evolution trouble → bounded retries, then an alert."""
    from chipfarm.provisioning import chip_provision, provisioning_failed
    from chips.models import Chip

    try:
        return chip_provision(chip_id=chip_id).status
    except Chip.DoesNotExist:
        logger.warning("provision_chip: chip %s no longer exists; nothing to do", chip_id)
        return "gone"
    except (SalvyError, GatewayError) as exc:
        if self.request.retries < self.max_retries and (exc.retryable or getattr(exc, "kind", "") == "no_stock"):
            raise self.retry(exc=exc, countdown=PROVISION_BACKOFF[self.request.retries]) from None
        provisioning_failed(chip_id=chip_id, error=exc)
        return "failed"


@shared_task(name="chipfarm.release_chip", acks_late=True, ignore_result=True, soft_time_limit=60, time_limit=75)
def release_chip(chip_id: int, reason: str | None = None) -> bool:
    """Give back a retired chip's instance and line; what failed is retried by the release sweep (due-at)."""
    from chipfarm.provisioning import chip_release
    from chips.models import Chip

    try:
        return chip_release(chip_id=chip_id, reason=reason).done
    except Chip.DoesNotExist:
        logger.warning("release_chip: chip %s no longer exists; nothing to release", chip_id)
        return False


@shared_task(name="chipfarm.sweep_releases", ignore_result=True)
def sweep_releases() -> list[int]:
    """Every minute: queue the releases whose retry is due."""
    from chipfarm.provisioning import releases_sweep

    return releases_sweep()


@shared_task(name="chipfarm.cancel_line", acks_late=True)
def cancel_line(chip_id: int, reason: str = "technical-issues") -> None:
    """For other apps (by name): give back a chip's line with a reason (through the release above)."""
    release_chip.delay(chip_id, reason)


@shared_task(name="chipfarm.sweep_provisioning", ignore_result=True)
def sweep_provisioning() -> int:
    """Every 5 minutes: retire chips stuck in provisioning for 15 minutes."""
    from chipfarm.provisioning import sweep_stuck_provisioning

    return sweep_stuck_provisioning()


@shared_task(name="chipfarm.prune_snapshots", ignore_result=True)
def prune_snapshots(keep_days: int = 30) -> int:
    """Daily: drop pool snapshots older than `keep_days` (the chart shows 7)."""
    from chipfarm.models import PoolSnapshot

    deleted, _ = PoolSnapshot.objects.filter(taken_at__lt=timezone.now() - timedelta(days=keep_days)).delete()
    return deleted


@shared_task(name="chipfarm.sweep_pipeline", ignore_result=True, soft_time_limit=120, time_limit=150)
def sweep_pipeline() -> dict:
    """Every 5 minutes: pending chips with no code read their Salvy inbox; orphaned activations go back."""
    from chipfarm.pipeline import pipeline_sweep

    report = pipeline_sweep()
    return {"polled": report.polled, "started": report.started, "alerted": report.alerted, "reset": report.reset}
