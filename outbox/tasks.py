"""Celery entry points for the outbox: take ids, call one service."""

from __future__ import annotations

from celery import shared_task

from outbox import delivery


# Idempotent (rows are claimed with SKIP LOCKED and a lease), so a redelivered message does no harm.
@shared_task(name="outbox.deliver", acks_late=True, ignore_result=True)
def deliver(delivery_ids: list[int]) -> dict[str, int]:
    """Attempt these deliveries now (queued after the commit that wrote them); what is not due is skipped."""
    return delivery.deliveries_sweep(delivery_ids=[int(pk) for pk in delivery_ids])


@shared_task(name="outbox.sweep", acks_late=True, ignore_result=True)
def sweep() -> dict[str, int]:
    """Attempt every due delivery: retries, and rows whose queued task was lost (every 15 s by beat)."""
    return delivery.deliveries_sweep()
