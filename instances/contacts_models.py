"""The contacts' side of the pool: what they wrote, who asked to stop, and LIDs (field notes §5)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from chips.models import Chip


class ContactIdentity(models.Model):
    """A WhatsApp LID (``<digits>@lid``) and the phone number it stands for, learned when both appear together.

    A LID is not a phone number: inbound messages that carry only the LID are attributed through this table,
    never by reading the LID's digits as a number (field notes §5).
    """

    lid = models.CharField(_("LID"), max_length=32, unique=True)
    phone = models.CharField(_("phone (E.164)"), max_length=16)
    first_seen_at = models.DateTimeField(_("first seen at"), default=timezone.now)
    last_seen_at = models.DateTimeField(_("last seen at"), default=timezone.now)

    class Meta:
        verbose_name = _("contact identity (LID)")
        verbose_name_plural = _("contact identities (LID)")
        indexes = [
            # "Which LID is this phone?" (a contact's page).
            models.Index(fields=["phone"], name="contactidentity_phone_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.lid}@lid"


class InboundMessage(models.Model):
    """A contact's message that reached one of the pool's numbers: what the business app hears about."""

    class Binding(models.TextChoices):
        NEW = "new", _("New contact (bound now)")
        STICKY = "sticky", _("The contact's own chip")
        MOVED = "moved", _("A chip the contact was moved to")
        OTHER = "other", _("Another chip than the contact's")

    chip = models.ForeignKey(Chip, on_delete=models.CASCADE, related_name="inbound_messages", verbose_name=_("chip"))
    contact = models.CharField(_("contact (E.164)"), max_length=16, blank=True)
    contact_lid = models.CharField(_("contact LID"), max_length=32, blank=True)
    gateway_message_id = models.CharField(_("gateway message id"), max_length=64)
    text = models.TextField(_("text"), blank=True)
    media = models.CharField(_("media kind"), max_length=32, blank=True)
    binding = models.CharField(_("binding"), max_length=8, choices=Binding.choices)
    received_at = models.DateTimeField(_("received at"), default=timezone.now)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("inbound message")
        verbose_name_plural = _("inbound messages")
        ordering = ["-received_at", "-id"]
        indexes = [
            # "Did the contact write within 24 h?" (a reply) and the contact's page (last inbound).
            models.Index(fields=["contact", "-received_at"], name="inbound_contact_at_idx"),
        ]

    def __str__(self) -> str:
        return _("%(contact)s → chip %(chip)s") % {"contact": self.contact or self.contact_lid, "chip": self.chip_id}


class ContactSuppressionQuerySet(models.QuerySet["ContactSuppression"]):
    def active(self) -> ContactSuppressionQuerySet:
        return self.filter(lifted_at__isnull=True)


class ContactSuppression(models.Model):
    """A contact who asked not to be contacted: pool-wide, whatever chip they wrote to (Twilio's Advanced Opt-Out).

    While active, nothing is sent to the contact but answers to what they write (`reply`)."""

    class Source(models.TextChoices):
        MESSAGE = "message", _("Their own message")
        API = "api", _("API")
        ADMIN = "admin", _("Admin")

    contact = models.CharField(_("contact (E.164)"), max_length=16)
    reason = models.CharField(_("reason"), max_length=300, blank=True)
    source = models.CharField(_("source"), max_length=8, choices=Source.choices)
    created_by = models.CharField(_("by"), max_length=150, blank=True)
    rule = models.CharField(_("rule that matched"), max_length=120, blank=True)
    trigger = models.ForeignKey(InboundMessage, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                                verbose_name=_("the message that triggered it"))
    lifted_at = models.DateTimeField(_("lifted at"), null=True, blank=True)
    lifted_by = models.CharField(_("lifted by"), max_length=150, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = ContactSuppressionQuerySet.as_manager()

    class Meta:
        verbose_name = _("opt-out")
        verbose_name_plural = _("opt-outs")
        ordering = ["-created_at"]
        constraints = [
            # One active opt-out per contact: a second "PARAR" changes nothing.
            models.UniqueConstraint(fields=["contact"], condition=Q(lifted_at__isnull=True),
                                    name="suppression_one_active_per_contact"),
        ]

    def __str__(self) -> str:
        return self.contact


class OptOutRule(models.Model):
    """A keyword (the whole message) or phrase operators add to the opt-out classifier (instances/optout.py)."""

    class Kind(models.TextChoices):
        KEYWORD = "keyword", _("Keyword (the whole message)")
        PHRASE = "phrase", _("Phrase (anywhere; * stands for a few words)")

    kind = models.CharField(_("kind"), max_length=8, choices=Kind.choices)
    text = models.CharField(_("text"), max_length=120)
    is_enabled = models.BooleanField(_("enabled"), default=True)
    created_by = models.CharField(_("by"), max_length=150, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("opt-out rule")
        verbose_name_plural = _("opt-out rules")
        constraints = [models.UniqueConstraint(fields=["kind", "text"], name="optoutrule_unique")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.text}"
