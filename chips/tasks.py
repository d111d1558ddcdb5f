"""Celery entry points for chips: take ids, call one service."""

from __future__ import annotations

from celery import shared_task

from chips import services


@shared_task(name="chips.run_transition", acks_late=True)
def chip_run_transition(chip_id: int, transition: str, reason: str = "", actor_id: str = "") -> str:
    """Run a transition for a caller that only has the chip's id (another app, another process).

    Safe to redeliver: a second run finds the chip already moved and gets a clean refusal.
    """
    chip = services.chip_transition(
        chip=chip_id, transition=transition, reason=reason,
        actor=services.Actor.task(actor_id or "chips.run_transition"),
    )
    return chip.status


@shared_task(name="chips.deliver_notifications", acks_late=True, ignore_result=True)
def deliver_notifications() -> dict:
    """Send due Slack notifications from the outbox (after a commit, and every 30 s by beat)."""
    from chips.notifications import notifications_deliver

    return notifications_deliver()
