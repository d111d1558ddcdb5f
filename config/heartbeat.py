"""The scheduler's heartbeat: beat queues this task every 30 s and a worker records when it ran.

`/health/deep` reads the age of that record: a stale tick means beat, or every worker, has stopped.
It lives in `config` (not an app) because it watches the infrastructure, not the pool.
"""

from __future__ import annotations

from celery import shared_task

LAST_TICK_KEY = "beat:last_tick"


@shared_task(name="config.heartbeat", ignore_result=True)
def heartbeat() -> str:
    """Store the current time under "beat:last_tick"; returns it (ISO 8601)."""
    from django.core.cache import cache
    from django.utils import timezone

    now = timezone.now().isoformat()
    cache.set(LAST_TICK_KEY, now, timeout=None)
    return now
