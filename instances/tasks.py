"""Celery entry points for instances."""

from __future__ import annotations

from celery import shared_task

from instances.health import instances_check


@shared_task(name="instances.check_instances", acks_late=True, ignore_result=True,
             soft_time_limit=50, time_limit=55)
def check_instances() -> dict:
    """Every minute: read every instance's state and record the changes (idempotent)."""
    result = instances_check()
    return {"checked": result.checked, "changed": result.changed, "unknown": result.unknown}


@shared_task(name="instances.reset_counters", ignore_result=True)
def reset_counters() -> int:
    """Zero usage counters of windows that are over (cosmetic: reservations already ignore old windows)."""
    from instances.routing import counters_reset

    return counters_reset()
