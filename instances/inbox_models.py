"""The webhook's inbox: message events from the gateway as they arrived (instances.inbox applies them)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from instances.models import Instance


class WebhookReceipt(models.Model):
    """One row per distinct message event from the gateway, stored the moment it arrives — the only work the
    webhook does for it (instances.inbox). The drain applies the stored events later, in arrival order per
    instance, and stamps `applied_at`; a duplicate hits the unique key and is never stored twice.

    State events (connection.update, ...) get no row: they are applied at once, idempotently. Applied rows are
    pruned after WEBHOOK_RECEIPT_RETENTION_DAYS; rows not yet applied never are.
    """

    class Outcome(models.TextChoices):
        PROCESSED = "processed", _("applied")
        ERROR = "error", _("failed (given up)")

    # Unique by the constraint below, not `unique=True`: that would add a second (pattern-ops) index to every
    # insert of the hottest table, for LIKE queries nothing makes.
    dedup_key = models.CharField(_("dedup key"), max_length=200, null=True, blank=True)
    event = models.CharField(_("event"), max_length=40)
    instance_name = models.CharField(_("instance name"), max_length=64)
    instance = models.ForeignKey(Instance, verbose_name=_("instance"), on_delete=models.CASCADE, null=True,
                                 blank=True, related_name="+")
    data = models.JSONField(_("data"), null=True, blank=True)
    received_at = models.DateTimeField(_("received at"), default=timezone.now, db_index=True)
    applied_at = models.DateTimeField(_("applied at"), null=True, blank=True)
    outcome = models.CharField(_("outcome"), max_length=20, choices=Outcome.choices, blank=True)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)

    class Meta:
        verbose_name = _("webhook receipt")
        verbose_name_plural = _("webhook receipts")
        indexes = [
            # The drain's queue: the few rows not applied yet, oldest first.
            models.Index(fields=["id"], condition=models.Q(applied_at__isnull=True), name="receipt_pending"),
        ]
        constraints = [models.UniqueConstraint(fields=["dedup_key"], name="receipt_dedup_key")]

    def __str__(self) -> str:
        return self.dedup_key or f"{self.event} {self.instance_name}"
