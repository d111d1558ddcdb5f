"""Consumer endpoints, the events written for them, and one outbox row per (event, endpoint) with its attempts.

The delivery state of a row (pending → delivered | failed) is written only by `outbox.delivery` and the replay
services in `outbox.services`; operators look at events, deliveries and attempts but never edit them.
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, timedelta

from django.contrib.postgres.fields import ArrayField
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import formats, timezone
from django.utils.translation import gettext_lazy as _

# Every type the pool emits; subscriptions are validated against it. "*" (or no type at all) means all of them.
EVENT_TYPES: dict[str, str] = {
    "message.received": _("A contact's message reached one of the pool's numbers."),
    "message.status": _("An outbound message was sent, delivered, read or failed."),
    "contact.moved": _("A contact's conversation moved to another number."),
    "contact.opted_out": _("A contact asked not to be contacted any more."),
    "contact.opted_in": _("A contact may be contacted again."),
    "chip.status_changed": _("A number changed state in its lifecycle."),
    "alert.raised": _("An alert was raised for the operators."),
    "pool.paused": _("Sending was paused pool-wide."),
    "pool.resumed": _("Sending was resumed."),
    "ping": _("A test event sent on request to one endpoint."),
}
ALL_EVENTS = "*"

# Waits before each retry after a failed attempt (Standard Webhooks' schedule): eight attempts over about 28 h.
RETRY_DELAYS: tuple[timedelta, ...] = (
    timedelta(seconds=5), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2),
    timedelta(hours=5), timedelta(hours=10), timedelta(hours=10),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


class EndpointQuerySet(models.QuerySet["Endpoint"]):
    def enabled(self) -> EndpointQuerySet:
        return self.filter(is_enabled=True)

    def subscribed_to(self, event_type: str) -> EndpointQuerySet:
        """Endpoints whose subscription covers `event_type` (no types, "*", or the type itself)."""
        return self.filter(Q(event_types=[]) | Q(event_types__overlap=[ALL_EVENTS, event_type]))


class Endpoint(models.Model):
    """A consumer's URL and what it wants to receive, signed with its own secret."""

    url = models.CharField(_("URL"), max_length=2000)
    # Signing needs it in clear; it is shown once (creation), never again.
    secret = models.CharField(_("signing secret"), max_length=100, default=new_secret, editable=False)
    event_types = ArrayField(models.CharField(max_length=50), verbose_name=_("event types"), default=list,
                             blank=True, help_text=_("Empty or * for every event type."))
    description = models.CharField(_("description"), max_length=500, blank=True)
    is_enabled = models.BooleanField(_("enabled"), default=True)
    disabled_reason = models.CharField(_("disabled because"), max_length=500, blank=True)
    disabled_at = models.DateTimeField(_("disabled at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = EndpointQuerySet.as_manager()

    class Meta:
        verbose_name = _("consumer endpoint")
        verbose_name_plural = _("consumer endpoints")
        ordering = ["id"]

    def __str__(self) -> str:
        return self.url

    def is_subscribed_to(self, event_type: str) -> bool:
        """The Python twin of `EndpointQuerySet.subscribed_to`, for one loaded endpoint."""
        return not self.event_types or ALL_EVENTS in self.event_types or event_type in self.event_types


class Event(models.Model):
    """One fact for the consumers, written in the transaction of the fact itself."""

    event_id = models.CharField(_("event id"), max_length=40, unique=True, default=new_event_id, editable=False)
    type = models.CharField(_("type"), max_length=50)
    data = models.JSONField(_("data"), encoder=DjangoJSONEncoder, default=dict)
    occurred_at = models.DateTimeField(_("occurred at"), default=timezone.now)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("event")
        verbose_name_plural = _("events")
        ordering = ["-created_at", "-id"]
        indexes = [
            # The admin's event list, newest first, filtered by type.
            models.Index(fields=["type", "-created_at"], name="outbox_event_type_at_idx"),
            # The retention prune: the oldest events first.
            models.Index(fields=["created_at"], name="outbox_event_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"

    def as_payload(self) -> dict:
        """The JSON body consumers receive: the same on every attempt and every replay."""
        return {"type": self.type, "id": self.event_id,
                "timestamp": self.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "data": self.data}


class DeliveryQuerySet(models.QuerySet["Delivery"]):
    def due(self, now) -> DeliveryQuerySet:
        """Pending rows whose next attempt is due, to endpoints that are enabled (the sweep's question)."""
        return self.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now, endpoint__is_enabled=True)


class Delivery(models.Model):
    """The outbox row of one event for one endpoint: due at `next_attempt_at` until delivered or given up.

    While an attempt is in flight, `next_attempt_at` is pushed a lease ahead, so that neither the sweep nor a
    replay's worker sends it again unless the sender died.
    """

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        DELIVERED = "delivered", _("Delivered")
        FAILED = "failed", _("Failed")

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries", verbose_name=_("event"))
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deliveries",
                                 verbose_name=_("endpoint"))
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0,
                                                help_text=_("Attempts since it was queued or last replayed."))
    next_attempt_at = models.DateTimeField(_("next attempt at"), default=timezone.now)
    last_attempt_at = models.DateTimeField(_("last attempt at"), null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(_("last response code"), null=True, blank=True)
    last_error = models.CharField(_("last error"), max_length=500, blank=True)
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        verbose_name = _("delivery")
        verbose_name_plural = _("deliveries")
        ordering = ["-created_at", "-id"]
        permissions = [("replay_delivery", _("Can replay deliveries to consumer endpoints"))]
        constraints = [
            # One outbox row per (event, endpoint): a replay re-queues it rather than adding one.
            models.UniqueConstraint(fields=["event", "endpoint"], name="outbox_delivery_one_per_endpoint"),
        ]
        indexes = [
            # The sweep: pending rows by due time (SELECT ... FOR UPDATE SKIP LOCKED).
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="outbox_delivery_due_idx"),
            # "Replay every failed delivery since T" and the endpoint's failure count.
            models.Index(fields=["endpoint", "status", "created_at"], name="outbox_delivery_ep_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} → {self.endpoint_id} ({self.get_status_display()})"


class DeliveryAttempt(models.Model):
    """One try of a delivery: when, what came back (a response code or an error), how long it took."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log",
                                 verbose_name=_("delivery"))
    # Also the endpoint's, directly: "an endpoint's recent attempts" is one index scan, not a join over its
    # deliveries (an attempt never moves to another endpoint).
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="attempt_log",
                                 verbose_name=_("endpoint"))
    attempted_at = models.DateTimeField(_("attempted at"), default=timezone.now)
    status_code = models.PositiveSmallIntegerField(_("response code"), null=True, blank=True)
    error = models.CharField(_("error"), max_length=500, blank=True)
    response_excerpt = models.CharField(_("response (start)"), max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), default=0)
    is_success = models.BooleanField(_("succeeded"), default=False)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("delivery attempt")
        verbose_name_plural = _("delivery attempts")
        ordering = ["-attempted_at", "-id"]
        indexes = [
            # An endpoint's recent attempts (admin page, API detail, the changelist's last status).
            models.Index(fields=["endpoint", "-attempted_at"], name="outbox_attempt_ep_at_idx"),
            # A delivery's attempts (its admin page).
            models.Index(fields=["delivery", "-attempted_at"], name="outbox_attempt_delivery_at_idx"),
        ]

    def __str__(self) -> str:
        at = formats.date_format(timezone.localtime(self.attempted_at), "SHORT_DATETIME_FORMAT")
        return f"{self.delivery_id} @ {at}: {self.outcome}"

    @property
    def outcome(self) -> str:
        return str(self.status_code) if self.status_code is not None else (self.error or "?")
