"""Message events from the gateway: stored when they arrive, applied right after, in order (W2 7/7).

The webhook does only what must happen before it answers: authenticate, parse, find the instance (through a
short-lived cache of name → id), and store the event with one `INSERT … ON CONFLICT (dedup_key) DO NOTHING`
— a duplicate stores nothing and is answered "duplicate". Everything else (the inbound message, its binding,
the receipt's effect on our message, the business app's event) is applied by the drain, a Celery task kicked
once per burst:

- the drain of shard k applies the pending events of the instances with `id % GATEWAY_EVENT_SHARDS == k`,
  oldest first, under a PostgreSQL advisory lock of that shard: two drains never apply the same instance's
  events at once or out of order, and K shards run side by side on K workers;
- a batch is one transaction (the events, then one UPDATE that stamps every applied row; a savepoint per event
  only when one fails), so an event is applied exactly once even if the worker dies mid-batch (nothing of the
  batch is committed); what every event of a batch reads the same is read once, and its append-only rows go in
  together (common.batch);
- an event whose handler raises stops its shard there (to keep the order) and is retried on the sweep's next kick,
  then given up after RECEIPT_MAX_ATTEMPTS, logged and counted;
- the kick is a Redis flag (one task per burst, not one per event); the drain clears it before each read, so an
  event stored after the last read always kicks a new drain, queued GATEWAY_EVENT_DRAIN_DELAY_SECONDS later so
  that the events of that moment make one batch. The beat's sweep re-kicks any shard with events older than a few
  seconds (a lost kick, a worker that died).

State events (connection.update, status.instance, ...) are not queued: they are small, idempotent, and applied in
the request (instances.webhooks).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from celery import current_app
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models.functions import Mod
from django.utils import timezone

from common.batch import batch_scope
from common.redis import quick_client, redis_client
from common.statements import Statement
from instances.models import Instance, WebhookReceipt

logger = logging.getLogger(__name__)

QUEUED_EVENTS = frozenset({"messages.upsert", "messages.update"})
DRAIN_TASK = "instances.apply_gateway_events"
RECEIPT_MAX_ATTEMPTS = 3
KICK_TTL = 30  # seconds a kick flag lives: a lost kick delays a shard at most this long (the sweep also covers)
_LOCK_CLASS = 0x4757  # pg_try_advisory_lock(_LOCK_CLASS, shard): "GW"
BUSY_RETRY_SECONDS = 0.5  # a drain that found its shard's drain running asks again this much later


def shards() -> int:
    return max(1, int(settings.GATEWAY_EVENT_SHARDS))


def shard_of(instance_id: int) -> int:
    return instance_id % shards()


# --- the instance by name, through a short-lived cache ------------------------------------------------------

_ids: dict[str, tuple[int, float]] = {}
_ids_lock = threading.Lock()
_IDS_MAX = 50_000


def instance_id_for(name: str) -> int | None:
    """The id of the instance called `name` (None: no such instance). Known names are remembered for
    GATEWAY_INSTANCE_CACHE_SECONDS in this process; unknown ones are asked every time (an instance is created
    before the gateway can post for it)."""
    now = time.monotonic()
    hit = _ids.get(name)
    if hit is not None and hit[1] > now:
        return hit[0]
    pk = Instance.objects.filter(name=name).values_list("pk", flat=True).first()
    ttl = settings.GATEWAY_INSTANCE_CACHE_SECONDS
    if pk is not None and ttl > 0:
        with _ids_lock:
            if len(_ids) >= _IDS_MAX:
                _ids.clear()
            _ids[name] = (pk, now + ttl)
    return pk


def instance_id_forget(name: str) -> None:
    with _ids_lock:
        _ids.pop(name, None)


# --- storing ------------------------------------------------------------------------------------------------

_RECEIPT_INSERT = Statement(
    f"INSERT INTO {WebhookReceipt._meta.db_table} (dedup_key, event, instance_name, instance_id, data, received_at, "
    f"applied_at, outcome, attempts) VALUES (%s, %s, %s, %s, %s::jsonb, %s, NULL, '', 0) "
    f"ON CONFLICT (dedup_key) DO NOTHING RETURNING id")


def receipt_store(*, name: str, event: str, key: str | None, data: Any, now: datetime) -> str:
    """Store one message event for the drain: "accepted", "duplicate", or "unknown_instance"."""
    for _attempt in range(2):
        instance_id = instance_id_for(name)
        if instance_id is None:
            return "unknown_instance"
        # A savepoint only when a caller's transaction is open (the webhook itself runs in autocommit).
        guard = transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()
        try:
            with guard:
                row = _RECEIPT_INSERT.fetchone([key, event[:40], name, instance_id, json.dumps(data), now])
            stored = row is not None
        except IntegrityError:  # the cached instance was deleted meanwhile: ask again
            instance_id_forget(name)
            continue
        if not stored:
            return "duplicate"
        transaction.on_commit(partial(drain_kick_for_event, shard_of(instance_id)), robust=True)
        return "accepted"
    return "unknown_instance"


def _kick_key(shard: int) -> str:
    return cache.make_and_validate_key(f"gateway-events:kick:{shard}")


#: After the kick could not reach Redis, the webhook skips it this long (the 15 s sweep kicks the shard instead):
#: during an outage a request never waits on Redis more than once per back-off, and then at most
#: common.redis.QUICK_TIMEOUT_SECONDS.
KICK_BACKOFF_SECONDS = 5.0
_kick_skip_until = 0.0

#: How far the clocks of the process that queued a drain, this process and the worker may disagree (NTP keeps
#: servers within milliseconds). An error larger than this costs latency, never an event: an event committed after
#: its drain's last read waits for the sweep's kick.
KICK_CLOCK_MARGIN_SECONDS = 0.02


# shard → until when (this process's monotonic clock) an event stored now is sure to be read by a drain already
# queued: the webhook does not kick before then (instances.inbox.drain_kick_for_event).
_covered_until: dict[int, float] = {}


def drain_kick_for_event(shard: int) -> None:
    """The kick after a stored event: none while a drain this process knows of is queued to start reading after
    now (see `drain_kick`), so a burst costs Redis one command per drain, not one per event."""
    if time.monotonic() < _covered_until.get(shard, 0.0):
        return
    drain_kick(shard)


def drain_kick(shard: int) -> None:
    """Ask for a drain of `shard` unless one was asked for and has not started reading yet. Never raises and never
    blocks: the flag is set with short timeouts, and after Redis failed the kick is skipped for
    `KICK_BACKOFF_SECONDS`; when the broker is down the flag stays set (one slow publish per KICK_TTL, not one per
    event). Either way the event is stored, and the sweep catches up once they are back.

    The flag holds the moment its drain was queued for (GATEWAY_EVENT_DRAIN_DELAY_SECONDS after it was set; the
    task's ETA). That drain reads no earlier, so an event committed before then is in its batch: until then, less
    `KICK_CLOCK_MARGIN_SECONDS` for clocks that disagree, this process's events need no kick of their own. Past
    that moment each event asks Redis again until the drain has read (the flag is gone), so the margin is kept
    small: with half the delay, every other event of a steady stream paid a round trip to Redis."""
    global _kick_skip_until
    if time.monotonic() < _kick_skip_until:
        return
    delay = settings.GATEWAY_EVENT_DRAIN_DELAY_SECONDS
    due = time.time() + delay
    try:
        # SET … NX GET (Redis 7): sets the flag if absent, and answers the flag it found otherwise.
        found = quick_client().set(_kick_key(shard), f"{due:.3f}", nx=True, ex=KICK_TTL, get=True)
    except Exception as exc:
        _kick_skip_until = time.monotonic() + KICK_BACKOFF_SECONDS
        logger.warning("could not reach Redis to kick the drain of gateway events (shard %s: %s); the sweep will",
                       shard, exc.__class__.__name__)
        return
    if found is None:
        # The flag stays set until the drain starts reading, so every event of the next moment is in that drain's
        # batch without a task of its own.
        if not _drain_queue(shard, delay=delay):
            return
    else:
        try:
            due = float(found)
        except ValueError:
            return
    covered = due - time.time() - min(delay / 2, KICK_CLOCK_MARGIN_SECONDS)
    if covered > 0:
        _covered_until[shard] = time.monotonic() + covered


def _drain_queue(shard: int, *, delay: float) -> bool:
    try:
        current_app.send_task(DRAIN_TASK, args=[shard], countdown=delay if delay > 0 else None)
    except Exception:
        logger.warning("could not queue the drain of gateway events (shard %s); the sweep will", shard,
                       exc_info=True)
        return False
    return True


# --- applying -----------------------------------------------------------------------------------------------

@dataclass
class DrainReport:
    applied: int = 0
    failed: int = 0
    busy: bool = False
    more: bool = False


def receipts_drain(shard: int, *, batch: int = 100, budget_seconds: float = 20.0) -> DrainReport:
    """Apply `shard`'s pending events, oldest first, in batches while they come full; a batch that is not full was
    the backlog's end (the events stored meanwhile kicked the next drain, GATEWAY_EVENT_DRAIN_DELAY_SECONDS from
    now: one drain per moment, not one per event). When the budget is spent it kicks itself again. Another drain
    of the shard running: returns at once with `busy`, and asks again a moment later (that one may have read its
    last batch already)."""
    report = DrainReport()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_LOCK_CLASS, shard])
        if not cursor.fetchone()[0]:
            report.busy = True
            _drain_queue(shard, delay=max(BUSY_RETRY_SECONDS, settings.GATEWAY_EVENT_DRAIN_DELAY_SECONDS))
            return report
    try:
        deadline = time.monotonic() + budget_seconds
        while True:
            with contextlib.suppress(Exception):  # Redis down: we read anyway
                redis_client().delete(_kick_key(shard))
            rows = list(WebhookReceipt.objects.filter(applied_at__isnull=True)
                        .alias(shard=Mod("instance_id", shards())).filter(shard=shard).order_by("id")[:batch])
            if not rows:
                break
            applied, failed, stalled = _apply(rows)
            report.applied += applied
            report.failed += failed
            if stalled:  # an event failed and will be retried: by the sweep's next kick, not in a tight loop
                break
            if len(rows) < batch and not failed:  # the backlog's end: what came meanwhile kicked the next drain
                break
            if time.monotonic() >= deadline:
                report.more = True
                break
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_LOCK_CLASS, shard])
    if report.more:
        drain_kick(shard)
    return report


def _apply(rows: list[WebhookReceipt]) -> tuple[int, int, bool]:
    """One batch in one transaction; returns (applied, given up, stalled on an event to retry later). The batch is
    tried whole first (no savepoint per event); only when an event fails is it applied again with a savepoint per
    event, to keep the events before the failing one. Handlers act outside the database only on commit."""
    from config import counters

    instances = Instance.objects.select_related("chip").in_bulk({row.instance_id for row in rows})
    applied: list[int] = []
    failure: tuple[WebhookReceipt, BaseException] | None = None
    now = timezone.now()
    try:
        # One transaction for the batch: what every handler reads the same (the binding TTL, the subscribed
        # endpoints, the opt-out rules) is read once for it (common.batch).
        with transaction.atomic(), batch_scope():
            for row in rows:
                _handle(row, instances)
            _mark_applied([row.pk for row in rows], now)
        applied = [row.pk for row in rows]
    except Exception:  # some event failed: the whole batch was undone; again, one savepoint per event
        instances = Instance.objects.select_related("chip").in_bulk({row.instance_id for row in rows})
        with transaction.atomic():
            for row in rows:
                try:
                    with transaction.atomic():
                        _handle(row, instances)
                except Exception as exc:  # this event only; the batch keeps what came before it
                    failure = (row, exc)
                    break
                applied.append(row.pk)
            if applied:
                _mark_applied(applied, now)
    for event, n in Counter(row.event for row in rows[:len(applied)]).items():
        counters.incr("webhook_events", (event, "processed"), n)
    if failure is None:
        return len(applied), 0, False
    row, exc = failure
    attempts = row.attempts + 1
    if attempts < RECEIPT_MAX_ATTEMPTS:
        logger.warning("gateway event %s (%s) failed, attempt %d: %r", row.pk, row.event, attempts, exc)
        WebhookReceipt.objects.filter(pk=row.pk).update(attempts=attempts)
        return len(applied), 0, True
    logger.error("gateway event %s (%s of %s) given up after %d attempts", row.pk, row.event, row.instance_name,
                 attempts, exc_info=exc)
    WebhookReceipt.objects.filter(pk=row.pk).update(attempts=attempts, applied_at=now,
                                                    outcome=WebhookReceipt.Outcome.ERROR)
    counters.incr("webhook_events", (row.event, "error"))
    return len(applied), 1, False


def _handle(row: WebhookReceipt, instances: dict[int, Instance]) -> None:
    from instances.webhooks import HANDLERS

    HANDLERS[row.event](instances[row.instance_id], row.data, row.received_at)


_MARK_APPLIED = Statement(
    f"UPDATE {WebhookReceipt._meta.db_table} SET applied_at = %s, outcome = '{WebhookReceipt.Outcome.PROCESSED.value}' "
    f"WHERE id = ANY(%s::bigint[])")


def _mark_applied(ids: list[int], now: datetime) -> None:
    """One statement whatever the batch's size (prepared: the ORM's `pk__in` built and bound one per id)."""
    _MARK_APPLIED.execute([now, ids])


def receipts_sweep(*, older_than: timedelta = timedelta(seconds=5), now: datetime | None = None) -> list[int]:
    """The beat's safety net: kick every shard holding an event that waited longer than `older_than`."""
    now = now or timezone.now()
    waiting = (WebhookReceipt.objects.filter(applied_at__isnull=True, received_at__lt=now - older_than)
               .annotate(shard=Mod("instance_id", shards())).values_list("shard", flat=True).distinct())
    kicked = sorted({int(shard) for shard in waiting})  # Mod() answers a decimal: 1.0 is not the key of 1
    for shard in kicked:
        with contextlib.suppress(Exception):
            redis_client().delete(_kick_key(shard))  # a stale flag must not swallow this kick
        drain_kick(shard)
    return kicked


def backlog() -> tuple[int, float]:
    """Events waiting to be applied, and the age in seconds of the oldest (for /metrics)."""
    pending = WebhookReceipt.objects.filter(applied_at__isnull=True)
    oldest = pending.order_by("id").values_list("received_at", flat=True).first()
    age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
    return pending.count(), max(0.0, age)
