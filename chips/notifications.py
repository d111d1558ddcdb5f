"""Slack notifications through an outbox (chips.Notification) and the Slack client."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from chips.client import SlackError, post_message
from chips.models import Notification

logger = logging.getLogger(__name__)

THROTTLE = timedelta(minutes=30)
MAX_ATTEMPTS = 8


def notify(*, channel: str, text: str, key: str = "") -> Notification | None:
    """Queue a Slack message; with a key, at most one per 30 minutes (returns None when throttled).

    Call it inside the transaction that decided to notify: the row commits (or rolls back) with it, and
    the delivery task is queued only after commit.
    """
    now = timezone.now()
    if key and Notification.objects.filter(dedup_key=key, created_at__gt=now - THROTTLE).exists():
        return None
    row = Notification.objects.create(channel=channel, text=text, dedup_key=key, created_at=now,
                                      next_attempt_at=now)
    transaction.on_commit(_kick_delivery)
    return row


def _kick_delivery() -> None:
    try:
        current_app.send_task("chips.deliver_notifications", ignore_result=True)
    except Exception:  # broker down: the beat sweep delivers it later
        logger.warning("could not queue the notification delivery; the periodic sweep will send it")


def _webhook_url(channel: str) -> str:
    if channel == Notification.Channel.OPERATIONS and settings.SLACK_OPERATIONS_WEBHOOK_URL:
        return settings.SLACK_OPERATIONS_WEBHOOK_URL
    return settings.SLACK_WEBHOOK_URL


def notifications_deliver(*, limit: int = 50) -> dict[str, int]:
    """Send due pending notifications (rows locked with SKIP LOCKED: two workers never send one twice)."""
    sent = failed = 0
    now = timezone.now()
    with transaction.atomic():
        due = list(
            Notification.objects.select_for_update(skip_locked=True)
            .filter(status=Notification.Status.PENDING, next_attempt_at__lte=now)
            .order_by("next_attempt_at")[:limit]
        )
        for row in due:
            url = _webhook_url(row.channel)
            if not url:
                # No Slack configured (the demo): keep the record, log the text.
                logger.info("slack (%s, not configured): %s", row.channel, row.text)
                row.status, row.sent_at = Notification.Status.SENT, now
                row.last_error = "SLACK_WEBHOOK_URL not set; logged only"
                row.save(update_fields=["status", "sent_at", "last_error", "updated_at"])
                sent += 1
                continue
            try:
                post_message(text=f"[{row.channel}] {row.text}", webhook_url=url)
            except SlackError as exc:
                row.attempts += 1
                row.last_error = str(exc)[:300]
                if not exc.retryable or row.attempts >= MAX_ATTEMPTS:
                    row.status = Notification.Status.FAILED
                else:
                    backoff = exc.retry_after or min(600, 15 * 2 ** (row.attempts - 1))
                    row.next_attempt_at = now + timedelta(seconds=backoff)
                row.save(update_fields=["attempts", "last_error", "status", "next_attempt_at", "updated_at"])
                failed += 1
            else:
                row.attempts += 1
                row.status, row.sent_at = Notification.Status.SENT, timezone.now()
                row.save(update_fields=["attempts", "status", "sent_at", "updated_at"])
                sent += 1
    return {"sent": sent, "failed": failed}
