"""Delivering the outbox: claim a due row, sign and POST it, record the attempt, schedule the next one.

A row is claimed with SELECT ... FOR UPDATE SKIP LOCKED and a lease (its `next_attempt_at` pushed past the
longest an attempt can take) in a short transaction, and the HTTP request runs outside any transaction: two
workers never send one row at once, no connection sits idle in a transaction for the length of a request, and a
worker that dies mid-request only delays the row until its lease runs out (at-least-once: consumers deduplicate
by `webhook-id`, which is the event's id on every attempt and every replay).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from standardwebhooks.webhooks import Webhook

from outbox import services
from outbox.client import ConsumerClient, ConsumerError, excerpt_of
from outbox.models import MAX_ATTEMPTS, RETRY_DELAYS, Delivery, DeliveryAttempt, Endpoint, Event
from outbox.targets import TargetRefused, target_for

logger = logging.getLogger(__name__)

# Longer than an attempt can take (DNS, a 5 s connect, the read timeout): a row is sent again only if its
# sender is gone.
LEASE = timedelta(seconds=90)
# A sweep stops claiming after this long, under CELERY_TASK_SOFT_TIME_LIMIT (60 s) even when its last
# attempt takes the whole timeout; the next beat tick (or another worker) goes on.
SWEEP_BUDGET_SECONDS = 30.0


def body_of(event: Event) -> str:
    """The JSON text consumers receive (compact; the same for the same stored event)."""
    return json.dumps(event.as_payload(), cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False)


def signature_headers(*, secret: str, event_id: str, body: str, at: datetime) -> dict[str, str]:
    """Standard Webhooks headers for one attempt, signed by the library (``v1,<base64 HMAC-SHA256>``)."""
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(math.floor(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id=event_id, timestamp=at, data=body),
    }


@dataclass(frozen=True)
class Outcome:
    status_code: int | None = None
    error: str = ""
    excerpt: str = ""
    duration_ms: int = 0

    @property
    def is_success(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def is_gone(self) -> bool:
        return self.status_code == 410


def _claim(*, delivery_ids: list[int] | None = None) -> tuple[Delivery, datetime] | None:
    """The next due row, leased to this caller: (row with its event and endpoint, the lease's end)."""
    now = timezone.now()
    with transaction.atomic():
        due = (Delivery.objects.due(now).select_related("event", "endpoint")
               .select_for_update(skip_locked=True, of=("self",)).order_by("next_attempt_at", "pk"))
        if delivery_ids is not None:
            due = due.filter(pk__in=delivery_ids)
        row = due.first()
        if row is None:
            return None
        lease_until = now + LEASE
        Delivery.objects.filter(pk=row.pk).update(next_attempt_at=lease_until, updated_at=now)
    return row, lease_until


def _send(delivery: Delivery, client: ConsumerClient) -> Outcome:
    """One signed POST, checked against SSRF first (DNS may have changed since the endpoint was saved)."""
    started = time.perf_counter()

    def elapsed() -> int:
        return round((time.perf_counter() - started) * 1000)

    try:
        target = target_for(delivery.endpoint.url)
    except TargetRefused as exc:
        return Outcome(error=(_("Not sent: %(reason)s") % {"reason": exc.message})[:500], duration_ms=elapsed())
    body = body_of(delivery.event)
    headers = signature_headers(secret=delivery.endpoint.secret, event_id=delivery.event.event_id, body=body,
                                at=timezone.now())
    try:
        response = client.post_event(url=target.url, body=body.encode(), headers={**target.headers, **headers},
                                     extensions=target.extensions or None)
    except ConsumerError as exc:
        error = "" if exc.status_code is not None else exc.message[:500]
        return Outcome(status_code=exc.status_code, error=error, excerpt=exc.excerpt, duration_ms=elapsed())
    except Exception as exc:  # a bug or an odd URL must not leave the row leased with nothing recorded
        logger.exception("webhook delivery %s failed unexpectedly", delivery.pk)
        return Outcome(error=f"{type(exc).__name__}: {exc}"[:500], duration_ms=elapsed())
    return Outcome(status_code=response.status_code, excerpt=excerpt_of(response), duration_ms=elapsed())


def _record(delivery: Delivery, lease_until: datetime, outcome: Outcome) -> DeliveryAttempt | None:
    """Write the attempt and what follows from it: delivered, the next retry, or giving up."""
    now = timezone.now()
    with transaction.atomic():
        # The endpoint first, as every writer of an endpoint and its rows does (no deadlock with a delete).
        endpoint = Endpoint.objects.select_for_update(no_key=True).filter(pk=delivery.endpoint_id).first()
        row = Delivery.objects.select_for_update().filter(pk=delivery.pk).first() if endpoint else None
        if row is None:
            return None  # the endpoint was deleted meanwhile, with its deliveries
        attempt = DeliveryAttempt.objects.create(
            delivery=row, endpoint=endpoint, attempted_at=now, status_code=outcome.status_code,
            error=outcome.error, response_excerpt=outcome.excerpt, duration_ms=outcome.duration_ms,
            is_success=outcome.is_success, created_at=now)
        if row.next_attempt_at != lease_until or row.status == Delivery.Status.DELIVERED:
            return attempt  # replayed while in flight: the replay owns the row now
        row.attempts += 1
        row.last_attempt_at, row.last_status_code = now, outcome.status_code
        row.last_error = outcome.error or (f"HTTP {outcome.status_code}" if not outcome.is_success else "")
        if outcome.is_success:
            row.status, row.delivered_at = Delivery.Status.DELIVERED, now
        elif row.status == Delivery.Status.FAILED or not endpoint.is_enabled:
            row.status = Delivery.Status.FAILED  # the endpoint was disabled while this attempt was in flight
        elif outcome.is_gone:
            row.status = Delivery.Status.FAILED
            services.endpoint_disable(
                endpoint=endpoint, alert_severity="info",
                reason=_("The endpoint answered 410 Gone on %(at)s.") % {"at": now.strftime("%Y-%m-%d %H:%M UTC")})
        elif row.attempts >= MAX_ATTEMPTS:
            row.status = Delivery.Status.FAILED
            services.endpoint_disable(
                endpoint=endpoint, alert_severity="warning",
                reason=_("%(count)d attempts over %(hours)d hours failed (last: %(last)s).")
                % {"count": row.attempts, "hours": round(sum(RETRY_DELAYS, timedelta()).total_seconds() / 3600),
                   "last": row.last_error})
        else:
            row.next_attempt_at = now + RETRY_DELAYS[row.attempts - 1]
        row.save(update_fields=["attempts", "last_attempt_at", "last_status_code", "last_error", "status",
                                "delivered_at", "next_attempt_at", "updated_at"])
    return attempt


def _attempt(delivery: Delivery, lease_until: datetime, client: ConsumerClient) -> DeliveryAttempt | None:
    outcome = _send(delivery, client)
    attempt = _record(delivery, lease_until, outcome)
    logger.info("webhook %s %s → endpoint %s: %s in %d ms", delivery.event.type, delivery.event.event_id,
                delivery.endpoint_id, outcome.status_code or outcome.error, outcome.duration_ms)
    return attempt


def _client() -> ConsumerClient:
    return ConsumerClient(timeout=settings.WEBHOOK_TIMEOUT_SECONDS)


def delivery_attempt(*, delivery_id: int, client: ConsumerClient | None = None) -> DeliveryAttempt | None:
    """Attempt one delivery now if it is due and nobody else holds it; the attempt, or None when not due."""
    claimed = _claim(delivery_ids=[delivery_id])
    if claimed is None:
        return None
    if client is not None:
        return _attempt(*claimed, client)
    with _client() as own:
        return _attempt(*claimed, own)


def deliveries_sweep(*, delivery_ids: list[int] | None = None, limit: int | None = None,
                     budget_seconds: float = SWEEP_BUDGET_SECONDS,
                     client: ConsumerClient | None = None) -> dict[str, int]:
    """Attempt due deliveries (only `delivery_ids` when given) until none is due, `limit` were attempted or the
    time budget is spent. Safe to run in many workers at once. Returns counts by outcome."""
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + budget_seconds
    own = client is None
    client = client or _client()
    try:
        while time.monotonic() < deadline and (limit is None or counts.total() < limit):
            claimed = _claim(delivery_ids=delivery_ids)
            if claimed is None:
                break
            attempt = _attempt(*claimed, client)
            counts["delivered" if attempt is not None and attempt.is_success else
                   "failed" if attempt is not None else "dropped"] += 1
    finally:
        if own:
            client.close()
    return dict(counts)
