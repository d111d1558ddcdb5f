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
from urllib.parse import urlsplit

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from standardwebhooks.webhooks import Webhook

from outbox import services
from outbox.client import ConsumerClient, ConsumerError, excerpt_of
from outbox.models import MAX_ATTEMPTS, RETRY_DELAYS, Delivery, DeliveryAttempt, Endpoint, Event
from outbox.targets import TargetRefused, target_for

logger = logging.getLogger(__name__)

# A claim holds its rows this long plus ATTEMPT_MAX for each of them (they are sent one after the other), so a
# row is sent again only if its sender is gone. ATTEMPT_MAX bounds one attempt: DNS, a 5 s connect, the read
# timeout (at most 30 s, settings).
LEASE = timedelta(seconds=30)
ATTEMPT_MAX = timedelta(seconds=40)
# Rows claimed per transaction: fewer commits per webhook, and a slow consumer delays at most this many rows
# behind its own in one worker.
CLAIM_BATCH = 10
# The attempts of a claim are recorded together once it is sent, or after this many seconds when it is slow.
RECORD_EVERY = 1.0
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


def _fast_commit() -> None:
    """This transaction's commit does not wait for the WAL flush.

    Claims and attempt records are the outbox's hot path (two commits per webhook). A database crash may lose the
    last fraction of a second of them: the rows then look unsent and go out again with the same webhook-id, which
    the at-least-once contract already asks consumers to absorb. Nothing else is at stake in these transactions.
    """
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit TO OFF")


def _claim(*, delivery_ids: list[int] | None = None, batch: int = CLAIM_BATCH) -> tuple[list[Delivery], datetime]:
    """Up to `batch` due rows, leased to this caller until the returned time (long enough to send them all one
    after the other): the rows come with their event and endpoint."""
    now = timezone.now()
    with transaction.atomic():
        _fast_commit()
        due = (Delivery.objects.due(now).select_related("event", "endpoint")
               .select_for_update(skip_locked=True, of=("self",)).order_by("next_attempt_at", "pk"))
        if delivery_ids is not None:
            due = due.filter(pk__in=delivery_ids)
        rows = list(due[:batch])
        lease_until = now + LEASE + ATTEMPT_MAX * len(rows)
        if rows:
            Delivery.objects.filter(pk__in=[r.pk for r in rows]).update(next_attempt_at=lease_until, updated_at=now)
    return rows, lease_until


def _release(rows: list[Delivery], lease_until: datetime) -> None:
    """Give back claimed rows this caller will not send (its time budget ran out): due again now."""
    Delivery.objects.filter(pk__in=[r.pk for r in rows], next_attempt_at=lease_until).update(
        next_attempt_at=timezone.now())


def _send(delivery: Delivery, clients: Clients) -> Outcome:
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
        client = clients.for_url(delivery.endpoint.url)
        response = client.post_event(url=target.url, body=body.encode(), headers={**target.headers, **headers},
                                     extensions=target.extensions or None)
    except ConsumerError as exc:
        error = "" if exc.status_code is not None else exc.message[:500]
        return Outcome(status_code=exc.status_code, error=error, excerpt=exc.excerpt, duration_ms=elapsed())
    except Exception as exc:  # a bug or an odd URL must not leave the row leased with nothing recorded
        logger.exception("webhook delivery %s failed unexpectedly", delivery.pk)
        return Outcome(error=f"{type(exc).__name__}: {exc}"[:500], duration_ms=elapsed())
    return Outcome(status_code=response.status_code, excerpt=excerpt_of(response), duration_ms=elapsed())


def _apply(row: Delivery, endpoint: Endpoint, outcome: Outcome, now: datetime) -> tuple[str, str] | None:
    """Move a locked row on after an attempt (in memory); (severity, reason) when its endpoint must be disabled."""
    row.attempts += 1
    row.last_attempt_at, row.last_status_code, row.updated_at = now, outcome.status_code, now
    row.last_error = outcome.error or (f"HTTP {outcome.status_code}" if not outcome.is_success else "")
    if outcome.is_success:
        row.status, row.delivered_at = Delivery.Status.DELIVERED, now
    elif row.status == Delivery.Status.FAILED or not endpoint.is_enabled:
        row.status = Delivery.Status.FAILED  # the endpoint was disabled while this attempt was in flight
    elif outcome.is_gone:
        row.status = Delivery.Status.FAILED
        return "info", _("The endpoint answered 410 Gone on %(at)s.") % {"at": now.strftime("%Y-%m-%d %H:%M UTC")}
    elif row.attempts >= MAX_ATTEMPTS:
        row.status = Delivery.Status.FAILED
        hours = round(sum(RETRY_DELAYS, timedelta()).total_seconds() / 3600)
        return "warning", (_("%(count)d attempts over %(hours)d hours failed (last: %(last)s).")
                           % {"count": row.attempts, "hours": hours, "last": row.last_error})
    else:
        row.next_attempt_at = now + RETRY_DELAYS[row.attempts - 1]
    return None


_STATE_FIELDS = ("attempts", "last_attempt_at", "last_status_code", "last_error", "status", "delivered_at",
                 "next_attempt_at", "updated_at")


def _save_rows(rows: list[Delivery]) -> None:
    """One UPDATE ... FROM (VALUES ...) for the rows' delivery state (bulk_update's CASE per field and row costs
    more Python than the whole attempt)."""
    if not rows:
        return
    fields = [Delivery._meta.get_field(name) for name in ("id", *_STATE_FIELDS)]
    casts = ", ".join(f"%s::{f.db_type(connection)}" for f in fields)
    values = ", ".join([f"({casts})"] * len(rows))
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    assignments = ", ".join(f"{quote(f.column)} = v.{quote(f.column)}" for f in fields[1:])
    params = [getattr(row, f.attname) for row in rows for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {quote(Delivery._meta.db_table)} AS d SET {assignments} FROM (VALUES {values}) "
                       f"AS v({columns}) WHERE d.{quote('id')} = v.{quote('id')}", params)


def _record(results: list[tuple[Delivery, Outcome]], lease_until: datetime) -> list[DeliveryAttempt]:
    """Write the attempts and what follows from them (delivered, the next retry, giving up), in one transaction."""
    if not results:
        return []
    now = timezone.now()
    with transaction.atomic():
        _fast_commit()
        # The endpoints first, then their rows, each in id order, as every writer of both does: no deadlock with
        # an endpoint's deletion, and the attempts never point at a deleted endpoint.
        endpoints = {e.pk: e for e in Endpoint.objects.select_for_update(no_key=True)
                     .filter(pk__in={d.endpoint_id for d, _ in results}).order_by("pk")}
        rows = {r.pk: r for r in Delivery.objects.select_for_update()
                .filter(pk__in=[d.pk for d, _ in results], endpoint_id__in=list(endpoints)).order_by("pk")}
        attempts, changed, disable = [], [], {}
        for delivery, outcome in results:
            row = rows.get(delivery.pk)
            if row is None:
                continue  # deleted with its endpoint meanwhile
            attempts.append(DeliveryAttempt(
                delivery=row, endpoint_id=row.endpoint_id, attempted_at=now, status_code=outcome.status_code,
                error=outcome.error, response_excerpt=outcome.excerpt, duration_ms=outcome.duration_ms,
                is_success=outcome.is_success, created_at=now))
            if row.next_attempt_at != lease_until or row.status == Delivery.Status.DELIVERED:
                continue  # replayed while in flight: the replay owns the row now
            if (why := _apply(row, endpoints[row.endpoint_id], outcome, now)) is not None:
                disable.setdefault(row.endpoint_id, why)
            changed.append(row)
        DeliveryAttempt.objects.bulk_create(attempts)
        _save_rows(changed)
        # Last: disabling fails every row still pending for the endpoint, the retries just scheduled included.
        for endpoint_id, (severity, reason) in disable.items():
            services.endpoint_disable(endpoint=endpoints[endpoint_id], reason=reason, alert_severity=severity)
    return attempts


def _log(delivery: Delivery, outcome: Outcome) -> None:
    logger.info("webhook %s %s → endpoint %s: %s in %d ms", delivery.event.type, delivery.event.event_id,
                delivery.endpoint_id, outcome.status_code or outcome.error, outcome.duration_ms)


def _attempt(delivery: Delivery, lease_until: datetime, clients: Clients) -> DeliveryAttempt | None:
    """Send one claimed row and record it."""
    outcome = _send(delivery, clients)
    _log(delivery, outcome)
    attempts = _record([(delivery, outcome)], lease_until)
    return attempts[0] if attempts else None


def _deliver_claimed(rows: list[Delivery], lease_until: datetime, clients: Clients,
                     deadline: float) -> list[DeliveryAttempt]:
    """Send claimed rows one after the other, recording them together (at least every RECORD_EVERY seconds)."""
    attempts: list[DeliveryAttempt] = []
    results: list[tuple[Delivery, Outcome]] = []
    stopped: set[int] = set()
    last_record = time.monotonic()
    for i, row in enumerate(rows):
        if time.monotonic() >= deadline:
            _release(rows[i:], lease_until)
            break
        if row.endpoint_id in stopped:
            continue  # its endpoint is being disabled, which fails this row: nothing more is sent there
        outcome = _send(row, clients)
        _log(row, outcome)
        results.append((row, outcome))
        if outcome.is_gone or (not outcome.is_success and row.attempts + 1 >= MAX_ATTEMPTS):
            stopped.add(row.endpoint_id)
        if time.monotonic() - last_record >= RECORD_EVERY:
            attempts += _record(results, lease_until)
            results, last_record = [], time.monotonic()
    return attempts + _record(results, lease_until)


class Clients:
    """One HTTP client per consumer host for the length of a sweep: connections are kept alive between the
    webhooks to one consumer, and a TLS connection opened for one name (SNI) is never reused for another name
    that happens to resolve to the same address (the requests go to checked addresses, not names)."""

    def __init__(self, *, client: ConsumerClient | None = None) -> None:
        self._fixed = client
        self._by_host: dict[str, ConsumerClient] = {}

    def for_url(self, url: str) -> ConsumerClient:
        if self._fixed is not None:
            return self._fixed
        host = urlsplit(url).netloc.lower()
        if host not in self._by_host:
            self._by_host[host] = ConsumerClient(timeout=settings.WEBHOOK_TIMEOUT_SECONDS)
        return self._by_host[host]

    def close(self) -> None:
        for client in self._by_host.values():
            client.close()
        self._by_host.clear()

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def delivery_attempt(*, delivery_id: int, client: ConsumerClient | None = None) -> DeliveryAttempt | None:
    """Attempt one delivery now if it is due and nobody else holds it; the attempt, or None when not due."""
    rows, lease_until = _claim(delivery_ids=[delivery_id], batch=1)
    if not rows:
        return None
    with Clients(client=client) as clients:
        return _attempt(rows[0], lease_until, clients)


def deliveries_sweep(*, delivery_ids: list[int] | None = None, limit: int | None = None,
                     budget_seconds: float = SWEEP_BUDGET_SECONDS,
                     client: ConsumerClient | None = None) -> dict[str, int]:
    """Attempt due deliveries (only `delivery_ids` when given) until none is due, `limit` were attempted or the
    time budget is spent. Safe to run in many workers at once. Returns counts by outcome."""
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + budget_seconds
    with Clients(client=client) as clients:
        while time.monotonic() < deadline and (limit is None or counts.total() < limit):
            batch = CLAIM_BATCH if limit is None else max(1, min(CLAIM_BATCH, limit - counts.total()))
            rows, lease_until = _claim(delivery_ids=delivery_ids, batch=batch)
            if not rows:
                break
            for attempt in _deliver_claimed(rows, lease_until, clients, deadline):
                counts["delivered" if attempt.is_success else "failed"] += 1
    return dict(counts)
