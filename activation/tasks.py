"""Celery entry points for activation: take an id, call one service.

Every service guards itself with a compare-and-set on the job row, so these tasks are safe to redeliver
(`acks_late`): a second run finds the attempt claimed or the job finished and does nothing. They never
sleep: waiting is a countdown (≤ services.MAX_COUNTDOWN s) on the next task, queued by the service. A
database hiccup is retried a few times; a chain lost for good is revived by the sweep.
"""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from activation import services

_RETRY = {
    "autoretry_for": (InterfaceError, OperationalError),
    "max_retries": 3,
    "retry_backoff": 2,
    "retry_backoff_max": 30,
    "retry_jitter": False,
}
# An activator call is bounded by HTTP_TIMEOUT_SECONDS (10 s by default); the rest is a few queries.
_LIMITS = {"soft_time_limit": 45, "time_limit": 55}


@shared_task(name=services.SUBMIT_TASK, acks_late=True, ignore_result=True, **_RETRY, **_LIMITS)
def submit_job(job_id: int) -> str:
    """One submit attempt of a queued job to the activator (services.job_submit)."""
    return services.job_submit(job_id=job_id)


@shared_task(name=services.POLL_TASK, acks_late=True, ignore_result=True, **_RETRY, **_LIMITS)
def poll_job(job_id: int) -> str:
    """One status poll of a submitted job (services.job_poll); the service queues the next one."""
    return services.job_poll(job_id=job_id)


@shared_task(name=services.SWEEP_TASK, acks_late=True, ignore_result=True, **_LIMITS)
def sweep_jobs() -> dict[str, list[int]]:
    """Every minute (beat): revive jobs whose submit or poll chain died with a worker (services.jobs_sweep)."""
    result = services.jobs_sweep()
    return {"polls_requeued": result.polls_requeued, "submits_requeued": result.submits_requeued,
            "timed_out": result.timed_out}
