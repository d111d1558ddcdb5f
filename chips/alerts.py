"""Alerts (a condition a person must look at) and the Slack outbox that tells the operators about them."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from common.texts import RenderedText, text_fields

# The operators' words for the alert kinds `alert_raise` is called with (the kind itself when not listed).
KIND_LABELS = {
    "orchestrator_step_failed": _("Orchestrator step failed"),
    "no_ready_chip": _("No ready chip"),
    "provision_budget": _("Provisioning budget spent"),
    "pool_critical": _("Pool critical"),
    "early_warning": _("Early warning"),
    "provisioning_failed": _("Provisioning failed"),
    "release_failed": _("Release failed"),
    "no_sms_code": _("No WhatsApp code"),
    "activation_orphaned": _("Activation without a job"),
    "activation_failed": _("Activation failed"),
    "activation_gave_up": _("Activation given up"),
    "activator_unauthorized": _("Activator refused our key"),
    "logged_out": _("Logged out"),
    "banned": _("Banned"),
    "instance_gone": _("Instance gone"),
    "qr_limit": _("QR codes exhausted"),
    "restricted": _("Reach-out restriction"),
    "gateway_server_down": _("Gateway server down"),
    "stuck_link": _("Stuck connecting"),
    "webhook_endpoint_disabled": _("Webhook endpoint disabled"),
}


class ChipAlertQuerySet(models.QuerySet["ChipAlert"]):
    def open(self) -> ChipAlertQuerySet:
        return self.filter(acknowledged_at__isnull=True)


class ChipAlert(models.Model):
    """A condition a person must look at. One open alert per dedup key; pool alerts have no chip."""

    class Severity(models.TextChoices):
        INFO = "info", _("Info")
        WARNING = "warning", _("Warning")
        CRITICAL = "critical", _("Critical")

    chip = models.ForeignKey(
        "chips.Chip", on_delete=models.CASCADE, related_name="alerts", null=True, blank=True, verbose_name=_("chip")
    )
    severity = models.CharField(_("severity"), max_length=10, choices=Severity.choices)
    kind = models.CharField(_("kind"), max_length=50)
    message = models.TextField(_("message"))
    message_code, message_params = text_fields()
    action_taken = models.CharField(_("action taken"), max_length=300, blank=True)
    action_taken_code, action_taken_params = text_fields()
    dedup_key = models.CharField(_("dedup key"), max_length=200)
    occurrences = models.PositiveIntegerField(_("occurrences"), default=1)
    last_raised_at = models.DateTimeField(_("last raised at"), default=timezone.now)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("acknowledged by"),
    )
    acknowledged_at = models.DateTimeField(_("acknowledged at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = ChipAlertQuerySet.as_manager()

    class Meta:
        verbose_name = _("alert")
        verbose_name_plural = _("alerts")
        ordering = ["-last_raised_at", "-id"]
        constraints = [
            # Raising an alert that is already open bumps it instead of adding a row.
            models.UniqueConstraint(
                fields=["dedup_key"],
                condition=Q(acknowledged_at__isnull=True),
                name="chipalert_one_open_per_key",
            ),
        ]
        indexes = [
            # The dashboard's "open alerts", newest first.
            models.Index(
                fields=["-last_raised_at"],
                condition=Q(acknowledged_at__isnull=True),
                name="chipalert_open_idx",
            ),
        ]

    message_text = RenderedText("message")
    action_taken_text = RenderedText("action_taken")

    def __str__(self) -> str:
        return f"[{self.get_severity_display()}] {self.kind_label()}: {self.message_text[:60]}"

    def kind_label(self) -> str:
        return str(KIND_LABELS.get(self.kind, self.kind))

    kind_label.short_description = _("kind")  # type: ignore[attr-defined]
    kind_label.admin_order_field = "kind"  # type: ignore[attr-defined]

    @property
    def is_open(self) -> bool:
        return self.acknowledged_at is None


class Notification(models.Model):
    """An outbox row for Slack: written in the transaction that decided to notify, delivered by a task.

    Slack being down never blocks or fails the work that raised the notification: the row waits, with
    backoff, until a delivery succeeds or its attempts run out.
    """

    class Channel(models.TextChoices):
        ALERTS = "alerts", _("Alerts")
        OPERATIONS = "operations", _("Operations")

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        SENT = "sent", _("Sent")
        FAILED = "failed", _("Failed")

    channel = models.CharField(_("channel"), max_length=12, choices=Channel.choices)
    dedup_key = models.CharField(_("dedup key"), max_length=200, blank=True)
    text = models.TextField(_("text"))
    status = models.CharField(_("status"), max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    last_error = models.CharField(_("last error"), max_length=300, blank=True)
    next_attempt_at = models.DateTimeField(_("next attempt at"), default=timezone.now)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("Slack notification")
        verbose_name_plural = _("Slack notifications")
        ordering = ["-created_at"]
        indexes = [
            # The delivery sweep: pending rows that are due.
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="notification_due_idx"),
            # The 30-minute throttle: the latest notification with a key.
            models.Index(fields=["dedup_key", "-created_at"], name="notification_key_idx"),
        ]

    def __str__(self) -> str:
        return f"[{self.get_channel_display()}] {self.text[:60]}"
