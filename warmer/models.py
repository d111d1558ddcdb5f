"""Warming: the phase plan, planned actions (due-at rows), daily metrics and the trust breakdown."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import formats, timezone
from django.utils.translation import gettext_lazy as _

from chips.models import Chip, WarmingPhase


class PhasePlan(models.Model):
    """One row per warming phase: when it starts and what a day of it looks like. Operators tune these."""

    phase = models.CharField(_("phase"), max_length=20, choices=WarmingPhase.choices, unique=True)
    order = models.PositiveSmallIntegerField(_("order"), unique=True)
    starts_on_day = models.PositiveSmallIntegerField(_("starts on warming day"))
    min_trust = models.PositiveSmallIntegerField(_("minimum trust to enter"), default=0)
    messages_per_day = models.PositiveIntegerField(_("messages per day"))
    new_peers_per_day = models.PositiveSmallIntegerField(_("new peers per day"))
    reply_ratio = models.FloatField(
        _("reply ratio"), help_text=_("Share of the day's messages that answer peers (1.0 = only reply).")
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("warming phase plan")
        verbose_name_plural = _("warming phase plans")
        ordering = ["order"]
        constraints = [
            models.CheckConstraint(condition=Q(reply_ratio__gte=0, reply_ratio__lte=1), name="phaseplan_reply_0_1"),
            models.CheckConstraint(condition=Q(min_trust__lte=100), name="phaseplan_trust_0_100"),
        ]

    def __str__(self) -> str:
        return _("%(phase)s (day %(day)s+)") % {"phase": self.get_phase_display(), "day": self.starts_on_day}

    @property
    def messages_per_hour(self) -> int:
        """The phase's hourly cap: its day spread over at least six hours (never below one)."""
        return max(1, -(-self.messages_per_day // 6))

    @property
    def initiations_per_day(self) -> int:
        """Conversations the chip starts; the rest of its volume is answering peers."""
        return round(self.messages_per_day * (1 - self.reply_ratio))


class WarmingDay(models.Model):
    """A chip's planned day: makes the daily planner idempotent (one plan per chip and day)."""

    chip = models.ForeignKey(Chip, on_delete=models.CASCADE, related_name="warming_plan_days",
                             verbose_name=_("chip"))
    day = models.DateField(_("day"))
    phase = models.CharField(_("phase"), max_length=20, choices=WarmingPhase.choices)
    warming_day = models.PositiveSmallIntegerField(_("warming day"))
    planned = models.PositiveIntegerField(_("planned"), default=0)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("planned warming day")
        verbose_name_plural = _("planned warming days")
        constraints = [models.UniqueConstraint(fields=["chip", "day"], name="warmingday_one_per_chip_day")]

    def __str__(self) -> str:
        return _("chip %(chip)s, %(day)s") % {"chip": self.chip_id, "day": formats.date_format(self.day)}


class WarmingAction(models.Model):
    """One message a warming chip will send at `due_at`; picked by the dispatcher with SKIP LOCKED."""

    class Kind(models.TextChoices):
        INITIATE = "initiate", _("Start a conversation")
        REPLY = "reply", _("Reply")

    class Status(models.TextChoices):
        PLANNED = "planned", _("Planned")
        CLAIMED = "claimed", _("Being sent")
        SENT = "sent", _("Sent")
        SKIPPED = "skipped", _("Skipped")
        FAILED = "failed", _("Failed")

    chip = models.ForeignKey(Chip, on_delete=models.CASCADE, related_name="warming_actions", verbose_name=_("chip"))
    peer = models.ForeignKey(Chip, on_delete=models.CASCADE, related_name="+", verbose_name=_("peer chip"))
    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices)
    text = models.CharField(_("text"), max_length=300)
    day = models.DateField(_("day"), help_text=_("Business day (São Paulo) the action belongs to."))
    due_at = models.DateTimeField(_("due at"))
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.PLANNED)
    typing_ms = models.PositiveIntegerField(_("typing ms"), default=0)
    reply_to = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                                 verbose_name=_("in reply to"))
    evolution_message_id = models.CharField(_("evolution message id"), max_length=64, blank=True)
    note = models.CharField(_("note"), max_length=300, blank=True)
    claimed_at = models.DateTimeField(_("claimed at"), null=True, blank=True)
    done_at = models.DateTimeField(_("done at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("warming action")
        verbose_name_plural = _("warming actions")
        ordering = ["due_at"]
        constraints = [
            # Never the same text to the same peer on the same day.
            models.UniqueConstraint(fields=["chip", "peer", "day", "text"], name="warmingaction_no_repeat_text"),
        ]
        indexes = [
            # The dispatcher's sweep: planned rows that are due, oldest first.
            models.Index(fields=["due_at"], condition=Q(status="planned"), name="warmingaction_due_idx"),
            # Peer choice ("when did these two last talk?") and the idle-72h check.
            models.Index(fields=["chip", "peer", "-done_at"], name="warmingaction_pair_idx"),
            # Claimed rows a dead worker left behind.
            models.Index(fields=["claimed_at"], condition=Q(status="claimed"), name="warmingaction_claimed_idx"),
        ]

    def __str__(self) -> str:
        return _("%(kind)s %(chip)s→%(peer)s at %(at)s") % {
            "kind": self.get_kind_display(), "chip": self.chip_id, "peer": self.peer_id,
            "at": formats.date_format(timezone.localtime(self.due_at), "SHORT_DATETIME_FORMAT")}


class ChipDailyMetrics(models.Model):
    """Per chip and business day: the warmer's own counts plus what the webhooks reported."""

    chip = models.ForeignKey(Chip, on_delete=models.CASCADE, related_name="daily_metrics", verbose_name=_("chip"))
    day = models.DateField(_("day"))
    sent = models.PositiveIntegerField(_("sent"), default=0)
    replies_sent = models.PositiveIntegerField(_("replies sent"), default=0)
    send_failures = models.PositiveIntegerField(_("send failures"), default=0)
    new_peers = models.PositiveIntegerField(_("new peers"), default=0)
    received = models.PositiveIntegerField(_("received"), default=0)
    delivery_failures = models.PositiveIntegerField(_("delivery failures"), default=0)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("daily chip metrics")
        verbose_name_plural = _("daily chip metrics")
        ordering = ["-day"]
        constraints = [models.UniqueConstraint(fields=["chip", "day"], name="metrics_one_per_chip_day")]

    def __str__(self) -> str:
        return _("chip %(chip)s, %(day)s") % {"chip": self.chip_id, "day": formats.date_format(self.day)}


class TrustBreakdown(models.Model):
    """The last trust computation of a chip, with each component, for the admin and for audits."""

    chip = models.OneToOneField(Chip, on_delete=models.CASCADE, related_name="trust_breakdown",
                                verbose_name=_("chip"))
    score = models.PositiveSmallIntegerField(_("score"))
    components = models.JSONField(_("components"), default=dict)
    inputs = models.JSONField(_("inputs"), default=dict)
    computed_at = models.DateTimeField(_("computed at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("trust breakdown")
        verbose_name_plural = _("trust breakdowns")

    def __str__(self) -> str:
        return _("chip %(chip)s: %(level)s") % {"chip": self.chip_id, "level": self.score}


class WarmingChip(Chip):
    """Chips seen from the warmer (an admin view: phase, day, today's plan against what was done, trust)."""

    class Meta:
        proxy = True
        verbose_name = _("warming chip")
        verbose_name_plural = _("warming chips")
