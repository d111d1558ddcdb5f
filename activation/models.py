"""Activation jobs and the Salvy SMS deliveries that start them (DESIGN §6).

A job has its own small state machine, kept in a plain `status` column because many workers move it:

    queued ──submit──▶ submitted ──first "running" poll──▶ running ──▶ succeeded | failed | timed_out
       │                   └──────────────────────────────────────────▶ succeeded | failed | timed_out
       └── submit attempts exhausted ──▶ failed

Only `activation.services` writes it, always as a compare-and-set
(`filter(pk=..., status=<expected>).update(...)`), so two workers holding the same job never both move it.
`next_poll_at` is the job's due-at: when the next submit attempt or status poll should run. The beat sweep
(`activation.sweep_jobs`) re-queues jobs whose due-at passed long ago: their task chain died with a worker.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from chips.models import Chip


class ActivationJobQuerySet(models.QuerySet["ActivationJob"]):
    def in_flight(self) -> ActivationJobQuerySet:
        return self.filter(status__in=ActivationJob.IN_FLIGHT)

    def finished(self) -> ActivationJobQuerySet:
        return self.filter(status__in=ActivationJob.FINISHED)


class ActivationJob(models.Model):
    """One attempt to register a chip's number on WhatsApp with an SMS code, through the VPS activator."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        SUBMITTED = "submitted", _("Submitted")
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        TIMED_OUT = "timed_out", _("Timed out")

    IN_FLIGHT = (Status.QUEUED, Status.SUBMITTED, Status.RUNNING)
    POLLING = (Status.SUBMITTED, Status.RUNNING)
    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT)
    RETRYABLE = (Status.FAILED, Status.TIMED_OUT)

    chip = models.ForeignKey(Chip, on_delete=models.CASCADE, related_name="activation_jobs",
                             verbose_name=_("chip"))
    status = models.CharField(_("status"), max_length=12, choices=Status.choices, default=Status.QUEUED)
    sms_code = models.CharField(_("SMS code"), max_length=12)
    sms_id = models.CharField(_("Salvy SMS id"), max_length=64)
    svix_id = models.CharField(_("Svix delivery id"), max_length=64, blank=True,
                               help_text=_("Empty for a job an operator retried."))
    retry_of = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                                 verbose_name=_("retry of"))
    activator_id = models.CharField(_("activator id"), max_length=64, blank=True)
    attempts = models.PositiveSmallIntegerField(_("submit attempts"), default=0)
    polls = models.PositiveIntegerField(_("status polls"), default=0)
    step = models.CharField(_("step"), max_length=64, blank=True,
                            help_text=_("Where the emulator flow stopped (failed jobs)."))
    screenshot_path = models.CharField(_("screenshot path"), max_length=500, blank=True)
    message = models.CharField(_("message"), max_length=500, blank=True)
    next_poll_at = models.DateTimeField(_("next submit or poll due at"), null=True, blank=True)
    submitted_at = models.DateTimeField(_("submitted at"), null=True, blank=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    deadline_at = models.DateTimeField(_("deadline"), null=True, blank=True,
                                       help_text=_("Submitted + 10 minutes: then the job times out."))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = ActivationJobQuerySet.as_manager()

    class Meta:
        verbose_name = _("activation job")
        verbose_name_plural = _("activation jobs")
        ordering = ["-created_at", "-id"]
        constraints = [
            # Svix redelivers a message with the same svix-id: one delivery, one job.
            models.UniqueConstraint(fields=["svix_id"], condition=~Q(svix_id=""),
                                    name="activationjob_one_per_svix_id"),
            # Salvy may also send the same SMS as a new message: one SMS, one job (operator retries reuse
            # the SMS's code and point at the job they retry).
            models.UniqueConstraint(fields=["sms_id"], condition=Q(retry_of__isnull=True),
                                    name="activationjob_one_per_sms_id"),
            # A chip is activated by one job at a time.
            models.UniqueConstraint(fields=["chip"], condition=Q(status__in=["queued", "submitted", "running"]),
                                    name="activationjob_one_in_flight_per_chip"),
            models.CheckConstraint(
                condition=Q(status__in=["queued", "submitted", "running", "succeeded", "failed", "timed_out"]),
                name="activationjob_status_valid",
            ),
        ]
        indexes = [
            # The sweep: in-flight jobs whose due-at is long past (`status IN (...) AND next_poll_at < now - x`).
            models.Index(fields=["status", "next_poll_at"], condition=Q(status__in=["queued", "submitted", "running"]),
                         name="activationjob_due_idx"),
            # A chip's jobs, newest first (admin search by chip, the retry action's "latest job" check).
            models.Index(fields=["chip", "-created_at"], name="activationjob_chip_at_idx"),
            # The admin changelist, newest first, filtered by status.
            models.Index(fields=["status", "-created_at"], name="activationjob_status_at_idx"),
        ]

    def __str__(self) -> str:
        return _("activation #%(id)s of chip %(chip)s (%(status)s)") % {"id": self.pk, "chip": self.chip_id,
                                                                          "status": self.get_status_display()}

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED


class SmsReceipt(models.Model):
    """Every authentic Salvy `sms.received` delivery and what became of it."""

    class Outcome(models.TextChoices):
        JOB_CREATED = "job_created", _("Activation started")
        DUPLICATE = "duplicate", _("Duplicate SMS")
        CHIP_NOT_PENDING = "chip_not_pending", _("Chip not waiting for a code")
        UNKNOWN_LINE = "unknown_line", _("Unknown line")
        NO_CODE = "no_code", _("No WhatsApp code")

    svix_id = models.CharField(_("Svix delivery id"), max_length=64, unique=True)
    sms_id = models.CharField(_("Salvy SMS id"), max_length=64)
    line_id = models.CharField(_("Salvy line id"), max_length=64, blank=True)
    phone = models.CharField(_("destination phone"), max_length=20, blank=True)
    origin = models.CharField(_("sender"), max_length=32, blank=True)
    text = models.CharField(_("text"), max_length=500, blank=True)
    code = models.CharField(_("WhatsApp code"), max_length=12, blank=True)
    outcome = models.CharField(_("outcome"), max_length=20, choices=Outcome.choices)
    chip = models.ForeignKey(Chip, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                             verbose_name=_("chip"))
    job = models.ForeignKey(ActivationJob, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                            verbose_name=_("activation job"))
    received_at = models.DateTimeField(_("received at"))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("SMS receipt")
        verbose_name_plural = _("SMS receipts")
        ordering = ["-received_at", "-id"]
        indexes = [
            # The admin changelist, newest first.
            models.Index(fields=["-received_at"], name="smsreceipt_received_idx"),
            # Admin search by SMS id ("what happened to this SMS?").
            models.Index(fields=["sms_id"], name="smsreceipt_sms_idx"),
        ]

    def __str__(self) -> str:
        return f"SMS {self.sms_id} ({self.get_outcome_display()})"
