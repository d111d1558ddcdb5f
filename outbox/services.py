"""Writes for the outbox: emitting events, managing endpoints, replays, and the alert hook.

Other apps call `event_emit` inside the transaction that records their fact. Delivery itself (the HTTP
attempts and the retry schedule) is `outbox.delivery`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import cache, partial
from typing import Any

from celery import current_app
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from common.batch import after_batch, batching, insert_later, memoized
from common.exceptions import DomainError, InvalidInput, NotFound
from common.inbound import strip_nul
from common.texts import Text
from outbox.models import ALL_EVENTS, EVENT_TYPES, Delivery, Endpoint, Event
from outbox.targets import TargetRefused, url_check

logger = logging.getLogger(__name__)

DELIVER_TASK = "outbox.deliver"
SWEEP_TASK = "outbox.sweep"
# Above this many rows a replay asks for a sweep rather than naming every id in one task message.
_KICK_IDS_MAX = 100

AlertHook = Callable[[str, str, str, str], Any]
_alert_hooks: list[AlertHook] = []


class EndpointDisabled(DomainError):
    status_code = 409
    code = "endpoint_disabled"


# --- alerts (they live in chips, above us: it registers a hook) --------------------------------------------------

def register_alert_hook(fn: AlertHook) -> None:
    """Have `fn(kind, severity, message, dedup_key)` called for every alert the outbox raises.

    Called once by the app that owns alerts (chips, in its AppConfig.ready()): the outbox cannot import it.
    """
    if fn not in _alert_hooks:
        _alert_hooks.append(fn)


def _raise_alert(*, kind: str, severity: str, message: str, dedup_key: str) -> None:
    """Hand an alert to the registered hooks, each in a savepoint: a failing hook never undoes the caller."""
    if not _alert_hooks:
        logger.warning("outbox alert with no hook registered: [%s] %s: %s", severity, kind, message)
    for hook in list(_alert_hooks):
        try:
            with transaction.atomic():
                hook(kind, severity, message, dedup_key)
        except Exception:
            logger.exception("outbox alert hook %r failed for %s", hook, dedup_key)


# --- events ------------------------------------------------------------------------------------------------------

def _json_ready(data: dict[str, Any]) -> dict[str, Any]:
    """The data as consumers will read it: datetimes, decimals and UUIDs as strings, no NUL (PostgreSQL)."""
    return json.loads(strip_nul(json.dumps(data, cls=DjangoJSONEncoder)))


def _subscribed_endpoint_ids(event_type: str) -> list[int]:
    """Enabled endpoints subscribed to the type, locked FOR KEY SHARE until the caller's commit.

    The lock only conflicts with a DELETE of the endpoint: without it, an endpoint deleted between this read and
    the insert of its delivery row would fail the caller's transaction on the foreign key. The SQL is the one
    `EndpointQuerySet.subscribed_to` writes. Read once per type in a drain batch (common.batch: the lock holds
    until the batch commits).
    """
    def read() -> tuple[int, ...]:
        with connection.cursor() as cursor:
            cursor.execute(*_subscribed_sql(event_type))
            return tuple(row[0] for row in cursor.fetchall())

    return list(memoized(("subscribed_endpoints", event_type), read))


@cache
def _subscribed_sql(event_type: str) -> tuple[str, tuple]:
    """The read of `_subscribed_endpoint_ids`, compiled once per type (its SQL and values depend on the type
    alone; a contact's move emits one on a route decision's path)."""
    query = Endpoint.objects.enabled().subscribed_to(event_type).order_by("pk").values_list("pk", flat=True)
    sql, params = query.query.sql_with_params()
    return f"{sql} FOR KEY SHARE", tuple(params)


def event_wanted(type: str) -> bool:
    """Is an enabled endpoint subscribed to `type`? For a caller whose event data costs a read: when none is,
    `event_emit` would record nothing (the same read, so a batch makes it once)."""
    return bool(_subscribed_endpoint_ids(type))


def event_emit(*, type: str, data: dict[str, Any], at: datetime | None = None) -> Event | None:
    """Record an event for every enabled endpoint subscribed to `type`; None when no endpoint wants it.

    Call it inside the transaction that records the fact: the event and its delivery rows commit or roll back
    with it, and delivery is queued only after commit (a broker outage is logged, never raised: the beat sweep
    delivers the rows later). `at` is when the fact happened (default: now).

    Conventions for `data`: a flat JSON object naming the subject by its ids (``chip_id``, ``message_id``) and
    the contact by its number (``contact``, E.164 digits), times as ISO 8601 strings (datetimes are converted),
    and no secrets; e.g. ``message.status``: ``{"message_id", "chip_id", "contact", "status", "error"?}``,
    ``chip.status_changed``: ``{"chip_id", "phone", "from", "to", "transition", "reason"}``,
    ``alert.raised``: ``{"alert_id", "kind", "severity", "message", "chip_id"?}``, ``pool.paused``:
    ``{"reason", "by"}``.
    """
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}; known: {', '.join(EVENT_TYPES)}")
    endpoint_ids = _subscribed_endpoint_ids(type)
    if not endpoint_ids:
        return None
    payload = _json_ready(data)
    now = timezone.now()
    event = Event(type=type, data=payload, occurred_at=at or now, created_at=now)
    rows = [Delivery(event=event, endpoint_id=pk, next_attempt_at=now, created_at=now) for pk in endpoint_ids]
    if batching():
        # A drain batch (common.batch): the event and its deliveries go in with the batch's other rows, and the
        # batch queues its deliveries with one task, not one per event.
        insert_later(event, numbered=True)
        for row in rows:
            insert_later(row, numbered=True)
        after_batch(DELIVER_TASK, [row.pk for row in rows], _deliver_after_commit)
        return event
    # Inside the caller's transaction no savepoint is needed (the rows go with the fact or not at all).
    with transaction.atomic(savepoint=False):
        event.save(force_insert=True)
        Delivery.objects.bulk_create(rows)
        _deliver_after_commit([row.pk for row in rows])
    return event


def _deliver_after_commit(delivery_ids: list[int]) -> None:
    transaction.on_commit(partial(_queue_delivery, delivery_ids), robust=True)


def _queue_delivery(delivery_ids: list[int]) -> None:
    try:
        if len(delivery_ids) > _KICK_IDS_MAX:
            current_app.send_task(SWEEP_TASK, ignore_result=True)
        else:
            current_app.send_task(DELIVER_TASK, args=[delivery_ids], ignore_result=True)
    except Exception as exc:  # the broker is down: the periodic sweep delivers them
        logger.warning("could not queue the delivery of %d webhook(s) (%r); the sweep will send them",
                       len(delivery_ids), exc)


# --- endpoints -----------------------------------------------------------------------------------------------------

def event_types_clean(event_types: Iterable[str]) -> list[str]:
    """The subscription as stored: known types only, no duplicates; [] for "everything" ("*" alone too)."""
    types = list(dict.fromkeys(str(t).strip() for t in event_types))
    unknown = [t for t in types if t != ALL_EVENTS and t not in EVENT_TYPES]
    if unknown:
        raise InvalidInput(
            _("Unknown event type %(type)s; known types: %(known)s.")
            % {"type": repr(unknown[0]), "known": ", ".join([ALL_EVENTS, *EVENT_TYPES])},
            field="event_types")
    return [ALL_EVENTS] if ALL_EVENTS in types else types


def _url_clean(url: str) -> str:
    url = url.strip()
    try:
        return url_check(url)
    except TargetRefused as exc:
        raise InvalidInput(exc.message, field="url") from None


def _locked(endpoint: Endpoint | int) -> Endpoint:
    pk = endpoint if isinstance(endpoint, int) else endpoint.pk
    found = Endpoint.objects.select_for_update(no_key=True).filter(pk=pk).first()
    if found is None:
        raise NotFound(_("Endpoint %(id)s does not exist.") % {"id": pk})
    return found


def endpoint_create(*, url: str, event_types: Iterable[str] = (), description: str = "",
                    is_enabled: bool = True) -> Endpoint:
    """A new endpoint with a fresh ``whsec_`` secret (the caller shows it once). InvalidInput names the field."""
    endpoint = Endpoint(url=_url_clean(url), event_types=event_types_clean(event_types),
                        description=description.strip(), is_enabled=is_enabled)
    if not is_enabled:
        endpoint.disabled_at, endpoint.disabled_reason = timezone.now(), _("Created disabled.")
    endpoint.save()
    logger.info("webhook endpoint %s created for %s", endpoint.pk, endpoint.url)
    return endpoint


def endpoint_update(*, endpoint: Endpoint | int, url: str | None = None, event_types: Iterable[str] | None = None,
                    description: str | None = None, is_enabled: bool | None = None, actor: str = "") -> Endpoint:
    """Change what is given (None: unchanged). Disabling fails its pending deliveries; enabling clears the reason."""
    clean_url = _url_clean(url) if url is not None else None
    clean_types = event_types_clean(event_types) if event_types is not None else None
    with transaction.atomic():
        row = _locked(endpoint)
        if clean_url is not None:
            row.url = clean_url
        if clean_types is not None:
            row.event_types = clean_types
        if description is not None:
            row.description = description.strip()
        if is_enabled is True and not row.is_enabled:
            row.is_enabled, row.disabled_at, row.disabled_reason = True, None, ""
        row.save()
        if is_enabled is False and row.is_enabled:
            row = endpoint_disable(endpoint=row, reason=_("Disabled by %(actor)s.") % {"actor": actor or "?"})
    return row


def endpoint_disable(*, endpoint: Endpoint | int, reason: str, alert_severity: str | None = None) -> Endpoint:
    """Stop sending to an endpoint: its pending deliveries fail (replay them once it is back), and with
    `alert_severity` an alert is raised — once, since an endpoint already disabled is left as it is."""
    with transaction.atomic():
        row = _locked(endpoint)
        if not row.is_enabled:
            return row
        now = timezone.now()
        row.is_enabled, row.disabled_at, row.disabled_reason = False, now, reason[:500]
        row.save(update_fields=["is_enabled", "disabled_at", "disabled_reason", "updated_at"])
        failed = Delivery.objects.filter(endpoint=row, status=Delivery.Status.PENDING).update(
            status=Delivery.Status.FAILED, last_error=(_("Endpoint disabled: %(reason)s") % {"reason": reason})[:500],
            updated_at=now)
        logger.warning("webhook endpoint %s disabled (%s); %d pending deliveries failed", row.pk, reason, failed)
        if alert_severity:
            _raise_alert(kind="webhook_endpoint_disabled", severity=alert_severity,
                        message=Text("alert.endpoint_disabled", url=row.url, reason=reason),
                        dedup_key=f"outbox:endpoint_disabled:{row.pk}")
    return row


def endpoint_delete(*, endpoint: Endpoint | int) -> None:
    """Delete an endpoint with its deliveries and attempts (its events stay)."""
    pk = endpoint if isinstance(endpoint, int) else endpoint.pk
    with transaction.atomic():
        # FOR UPDATE first (the lock a DELETE takes anyway): an attempt being recorded or an event being emitted
        # for this endpoint finishes before, and none starts after, so no row of theirs is left dangling.
        row = Endpoint.objects.select_for_update().filter(pk=pk).first()
        if row is None:
            raise NotFound(_("Endpoint %(id)s does not exist.") % {"id": pk})
        row.delete()


def endpoint_test(*, endpoint: Endpoint | int) -> Delivery:
    """Send a `ping` event to this endpoint only (whatever it subscribed to); queued after commit."""
    with transaction.atomic():
        row = _locked(endpoint)
        if not row.is_enabled:
            raise EndpointDisabled(_("Endpoint %(id)s is disabled; enable it first.") % {"id": row.pk})
        now = timezone.now()
        event = Event.objects.create(type="ping", data={"endpoint_id": row.pk, "message": "ping"},
                                     occurred_at=now, created_at=now)
        delivery = Delivery.objects.create(event=event, endpoint=row, next_attempt_at=now, created_at=now)
        _deliver_after_commit([delivery.pk])
    return delivery


# --- replays (same event, same webhook-id) ----------------------------------------------------------------------------

def _requeue(deliveries, now: datetime) -> list[int]:
    ids = list(deliveries.values_list("pk", flat=True))
    # next_attempt_at moves, so a sender already holding one of them records its attempt but not its outcome.
    Delivery.objects.filter(pk__in=ids).update(status=Delivery.Status.PENDING, attempts=0, next_attempt_at=now,
                                               delivered_at=None, updated_at=now)
    if ids:
        _deliver_after_commit(ids)
    return ids


def delivery_replay(*, delivery: Delivery | int) -> bool:
    """Send one delivery again from the start of the schedule; False when its endpoint is disabled."""
    pk = delivery if isinstance(delivery, int) else delivery.pk
    with transaction.atomic():
        rows = Delivery.objects.select_for_update().filter(pk=pk, endpoint__is_enabled=True)
        return bool(_requeue(rows, timezone.now()))


def event_replay(*, event: Event | int) -> int:
    """Send an event again to every enabled endpoint subscribed to its type (a ping: to the endpoint it was
    sent to). Endpoints that subscribed since get a delivery of their own. Returns how many were queued."""
    pk = event if isinstance(event, int) else event.pk
    with transaction.atomic():
        row = Event.objects.filter(pk=pk).first()
        if row is None:
            raise NotFound(_("Event %(id)s does not exist.") % {"id": pk})
        now = timezone.now()
        existing = set(Delivery.objects.filter(event=row).values_list("endpoint_id", flat=True))
        if row.type == "ping":
            wanted = set(Endpoint.objects.enabled().filter(pk__in=existing).values_list("pk", flat=True))
        else:
            wanted = set(_subscribed_endpoint_ids(row.type))
        new = Delivery.objects.bulk_create([Delivery(event=row, endpoint_id=e, next_attempt_at=now, created_at=now)
                                            for e in sorted(wanted - existing)])
        if new:
            _deliver_after_commit([d.pk for d in new])
        again = _requeue(Delivery.objects.select_for_update().filter(event=row, endpoint_id__in=wanted & existing),
                         now)
    return len(new) + len(again)


def deliveries_replay_failed(*, endpoint: Endpoint | int, since: datetime) -> int:
    """Send again every failed delivery of the endpoint created since `since`; returns how many."""
    with transaction.atomic():
        row = _locked(endpoint)
        if not row.is_enabled:
            raise EndpointDisabled(_("Endpoint %(id)s is disabled; enable it first.") % {"id": row.pk})
        failed = Delivery.objects.select_for_update().filter(endpoint=row, status=Delivery.Status.FAILED,
                                                             created_at__gte=since)
        return len(_requeue(failed, timezone.now()))
