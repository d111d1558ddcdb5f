"""Evolution instances, their health, and outbound routing state (DESIGN §4, §5)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from chips.models import Chip
from common.texts import RenderedText, text_fields


class GatewayServerQuerySet(models.QuerySet["GatewayServer"]):
    def enabled(self) -> GatewayServerQuerySet:
        return self.filter(is_enabled=True)

    def with_load(self) -> GatewayServerQuerySet:
        """Each server with `load`: the sessions it holds for chips that are not retired."""
        return self.annotate(load=models.Count("instances", filter=~Q(instances__chip__status="retired")))


class GatewayServer(models.Model):
    """One gateway server (an Evolution API process holds a few hundred sessions; a big pool spans several).

    Each instance lives on exactly one server. Empty URL and key mean the settings' EVOLUTION_API_URL / _KEY: the
    first server is seeded that way, so a one-server deployment configures nothing here.
    """

    name = models.CharField(_("name"), max_length=50, unique=True)
    base_url = models.URLField(_("base URL"), blank=True, help_text=_("Empty: EVOLUTION_API_URL."))
    api_key = models.CharField(_("API key"), max_length=200, blank=True, help_text=_("Empty: EVOLUTION_API_KEY."))
    capacity = models.PositiveIntegerField(_("capacity (sessions)"), default=settings.GATEWAY_SERVER_CAPACITY)
    is_enabled = models.BooleanField(_("takes new instances"), default=True)
    is_reachable = models.BooleanField(_("reachable"), default=True, editable=False)
    unreachable_since = models.DateTimeField(_("unreachable since"), null=True, blank=True, editable=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = GatewayServerQuerySet.as_manager()

    DEFAULT_NAME = "default"

    class Meta:
        verbose_name = _("gateway server")
        verbose_name_plural = _("gateway servers")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def url(self) -> str:
        return (self.base_url or settings.EVOLUTION_API_URL).rstrip("/")

    @property
    def key(self) -> str:
        return self.api_key or settings.EVOLUTION_API_KEY

    @classmethod
    def default(cls) -> GatewayServer:
        """The seed server (the settings' URL and key), created on first use."""
        server, _created = cls.objects.get_or_create(name=cls.DEFAULT_NAME)
        return server


class Instance(models.Model):
    """The gateway session of one chip, as last seen by a check or a webhook."""

    class State(models.TextChoices):
        UNKNOWN = "unknown", _("Unknown")
        OPEN = "open", _("Open")
        CONNECTING = "connecting", _("Connecting")
        CLOSE = "close", _("Closed")
        REFUSED = "refused", _("Refused")
        GONE = "gone", _("Gone from the gateway")

    #: How long a QR code lives on the gateway (Evolution: 45 s, field notes §6).
    QR_TTL = timedelta(seconds=45)

    chip = models.OneToOneField(Chip, on_delete=models.CASCADE, related_name="instance", verbose_name=_("chip"))
    server = models.ForeignKey(GatewayServer, on_delete=models.PROTECT, related_name="instances",
                               verbose_name=_("gateway server"), null=True)
    name = models.CharField(_("name"), max_length=64, unique=True)
    state = models.CharField(_("state"), max_length=12, choices=State.choices, default=State.UNKNOWN,
                             db_index=True)
    state_changed_at = models.DateTimeField(_("state changed at"), null=True, blank=True)
    qr_code = models.TextField(_("last QR code"), blank=True)
    qr_image = models.TextField(_("last QR image (data URL)"), blank=True)
    qr_updated_at = models.DateTimeField(_("QR updated at"), null=True, blank=True)
    pairing_code = models.CharField(_("pairing code"), max_length=16, blank=True)
    last_disconnect_code = models.PositiveSmallIntegerField(_("last disconnection code"), null=True, blank=True)
    last_disconnect_at = models.DateTimeField(_("last disconnection at"), null=True, blank=True)
    closing_by_us_at = models.DateTimeField(
        _("closed by the pool at"), null=True, blank=True,
        help_text=_("Set when the pool logs out or deletes the session: the 401 close that follows is expected."),
    )
    connecting_since = models.DateTimeField(_("connecting since"), null=True, blank=True)
    dead_socket_at = models.DateTimeField(
        _("socket found dead at"), null=True, blank=True,
        help_text=_("A send failed with \"Connection Closed\": out of routing until the session opens again."),
    )
    restart_requested_at = models.DateTimeField(_("restart requested at"), null=True, blank=True)
    restart_requests = models.PositiveSmallIntegerField(_("restart requests"), default=0)
    gone_at = models.DateTimeField(_("gone from the gateway at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("instance")
        verbose_name_plural = _("instances")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def qr_is_live(self, now: datetime | None = None) -> bool:
        """A QR is worth showing only while the session is linking and the code has not rotated away."""
        now = now or timezone.now()
        return (self.state == self.State.CONNECTING and bool(self.qr_code or self.qr_image)
                and self.qr_updated_at is not None and now - self.qr_updated_at < self.QR_TTL)

    def closed_by_us(self, now: datetime | None = None) -> bool:
        """Whether a close now is one the pool caused (its own logout/delete, within the last minutes)."""
        return self.closing_by_us_at is not None and (now or timezone.now()) - self.closing_by_us_at < CLOSED_BY_US


class InstanceLinkQuerySet(models.QuerySet["InstanceLink"]):
    def open(self, now: datetime | None = None) -> InstanceLinkQuerySet:
        return self.filter(ended_at__isnull=True, expires_at__gt=now or timezone.now())


class InstanceLink(models.Model):
    """A link the pool serves so a phone can pair with one chip's session (contracts/chip-activator.md, last
    section): an unguessable token, valid while that linking lasts, that answers the current QR or pairing code.
    No gateway credential ever leaves the pool; the token is the only key, and it dies with the linking."""

    class Purpose(models.TextChoices):
        ACTIVATION = "activation", _("Activation (the VPS activator scans it)")
        OWN_NUMBER = "own_number", _("A number the company owns")
        RELINK = "relink", _("Re-link")

    class End(models.TextChoices):
        LINKED = "linked", _("Linked")
        EXPIRED = "expired", _("Expired")
        SUPERSEDED = "superseded", _("Replaced by a newer link")
        CANCELLED = "cancelled", _("Cancelled")

    token = models.CharField(_("token"), max_length=64, unique=True)
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="links", verbose_name=_("instance"))
    purpose = models.CharField(_("purpose"), max_length=12, choices=Purpose.choices)
    requested_by = models.CharField(_("requested by"), max_length=150, blank=True)
    expires_at = models.DateTimeField(_("expires at"))
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)
    end_reason = models.CharField(_("end"), max_length=12, choices=End.choices, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = InstanceLinkQuerySet.as_manager()

    class Meta:
        verbose_name = _("link")
        verbose_name_plural = _("links")
        ordering = ["-created_at"]
        constraints = [
            # One live link per session: a new one supersedes the old.
            models.UniqueConstraint(fields=["instance"], condition=Q(ended_at__isnull=True),
                                    name="instancelink_one_open_per_instance"),
        ]

    def __str__(self) -> str:
        return _("link of %(instance)s (%(purpose)s)") % {"instance": self.instance_id,
                                                          "purpose": self.get_purpose_display()}


#: A close within this long of our own logout/delete is ours (Evolution delivers it within seconds; retries can
#: take a few minutes).
CLOSED_BY_US = timedelta(minutes=15)


def default_binding_ttl_days() -> int:
    """The routing policy row's default (a callable: a new row takes the setting in force)."""
    return settings.BINDING_TTL_DAYS


class RoutingPolicy(models.Model):
    """One row: the global kill switch and the strategy for new contacts."""

    class Strategy(models.TextChoices):
        LEAST_LOADED = "least_loaded", _("Least loaded")
        ROUND_ROBIN = "round_robin", _("Round robin")
        PRIORITY = "priority", _("Priority")

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    strategy = models.CharField(_("strategy"), max_length=20, choices=Strategy.choices,
                                default=Strategy.LEAST_LOADED)
    is_paused = models.BooleanField(_("sending paused"), default=False)
    paused_reason = models.CharField(_("pause reason"), max_length=300, blank=True)
    paused_by = models.CharField(_("paused by"), max_length=150, blank=True)
    paused_at = models.DateTimeField(_("paused at"), null=True, blank=True)
    binding_ttl_days = models.PositiveSmallIntegerField(
        _("binding TTL (days)"), default=default_binding_ttl_days,
        help_text=_("How long a contact stays with its chip after their last message. Default: BINDING_TTL_DAYS."),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("routing policy and kill switch")
        verbose_name_plural = _("routing policy and kill switch")
        constraints = [models.CheckConstraint(condition=Q(id=1), name="routingpolicy_single_row")]

    def __str__(self) -> str:
        return str(_("Sending paused") if self.is_paused else _("Sending enabled"))

    @classmethod
    def load(cls) -> RoutingPolicy:
        policy, _created = cls.objects.get_or_create(id=1)
        return policy

    @classmethod
    def binding_ttl(cls) -> timedelta:
        """How long a contact stays with its chip after their last message (routed or inbound binding): the policy
        row's value, which BINDING_TTL_DAYS only seeds; the router reads it in its context query, a drain batch once."""
        from common.batch import memoized

        return timedelta(days=memoized("ttl", lambda: cls.load().binding_ttl_days))


class SendingSwitch(models.Model):
    """One use of the kill switch, from its pause to its resume: who paused, why, when; who resumed, when.

    The routing policy row holds the switch in force (it is what routing reads); a resume closes the open row here
    and clears the policy's pause fields, so this table is the history an operator reads.
    """

    reason = models.CharField(_("reason"), max_length=300)
    paused_by = models.CharField(_("paused by"), max_length=150)
    paused_at = models.DateTimeField(_("paused at"))
    resumed_by = models.CharField(_("resumed by"), max_length=150, blank=True)
    resumed_at = models.DateTimeField(_("resumed at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("sending pause")
        verbose_name_plural = _("sending pauses (history)")
        ordering = ["-paused_at", "-id"]
        constraints = [
            # At most one pause in force (the policy row's lock serialises pause and resume; this states it).
            models.UniqueConstraint(models.Value(True), condition=Q(resumed_at__isnull=True),
                                    name="sendingswitch_one_open"),
            models.CheckConstraint(condition=Q(resumed_at__isnull=True) | Q(resumed_at__gte=models.F("paused_at")),
                                   name="sendingswitch_resumed_after_paused"),
            models.CheckConstraint(condition=~Q(reason=""), name="sendingswitch_reason_given"),
        ]

    def __str__(self) -> str:
        return f"{self.paused_by}: {self.reason[:60]}"

    @property
    def is_open(self) -> bool:
        return self.resumed_at is None


NEW_CONTACT_BUCKETS = 25  # this hour and the 24 before it: a window of 24 to 25 h, never shorter than 24 h


def _new_contact_buckets() -> list[int]:
    return [0] * NEW_CONTACT_BUCKETS


class ChipCapacity(models.Model):
    """Per-chip usage, the operator's cap overrides and the restriction: the row a reservation locks.

    The caps that hold for a chip are `instances.caps.caps_in_effect` (its status decides where they come
    from); this row holds only what an operator typed, never a copy of a warming phase's plan.

    Usage counters carry the start of the window they count. A reservation that finds an older window
    counts from zero, in the same locked transaction: a reset job that did not run can neither block
    sending nor let a chip pass its cap.
    """

    chip = models.OneToOneField(Chip, on_delete=models.CASCADE, primary_key=True, related_name="capacity",
                                verbose_name=_("chip"))
    max_per_hour = models.PositiveIntegerField(
        _("max messages per hour"), null=True, blank=True,
        help_text=_("Override while the chip is in production (active or cooling). Empty: MAX_MSGS_PER_HOUR. "
                    "Warming and ready chips follow their warming phase's plan."),
    )
    max_per_day = models.PositiveIntegerField(
        _("max messages per day"), null=True, blank=True,
        help_text=_("Override while the chip is in production (active or cooling). Empty: MAX_MSGS_PER_DAY. "
                    "Warming and ready chips follow their warming phase's plan."),
    )
    max_new_contacts_per_day = models.PositiveIntegerField(
        _("max new contacts per 24 h"), null=True, blank=True,
        help_text=_("Override while the chip is in production (active or cooling). Empty: "
                    "MAX_NEW_CONTACTS_PER_DAY. Warming and ready chips follow their warming phase's plan."),
    )
    priority = models.SmallIntegerField(_("priority"), default=0, help_text=_("Higher first (priority strategy)."))
    hour_window = models.DateTimeField(_("hour window"), null=True, blank=True)
    hour_count = models.PositiveIntegerField(_("hour count"), default=0)
    day_window = models.DateField(_("day window"), null=True, blank=True)
    day_count = models.PositiveIntegerField(_("day count"), default=0)
    last_routed_at = models.DateTimeField(_("last routed at"), null=True, blank=True)
    # This hour's messages per kind (instances.kinds), counted in `hour_window` like `hour_count` (their sum).
    hour_prospecting = models.PositiveIntegerField(_("prospecting this hour"), default=0)
    hour_follow_up = models.PositiveIntegerField(_("follow-ups this hour"), default=0)
    hour_reply = models.PositiveIntegerField(_("replies this hour"), default=0)
    restricted_until = models.DateTimeField(
        _("restricted from new contacts until"), null=True, blank=True,
        help_text=_("Set by WhatsApp's reach-out timelock (error 463)."),
    )
    allowance_step = models.PositiveSmallIntegerField(
        _("new-contact allowance step"), default=0,
        help_text=_("Index into NEW_CONTACT_ALLOWANCE_STEPS while the chip is in production: it climbs with clean "
                    "days in production and drops on a restriction or a rest."),
    )
    allowance_reason = models.CharField(_("why the allowance is at this step"), max_length=200, blank=True)
    allowance_reason_code, allowance_reason_params = text_fields()
    allowance_reason_text = RenderedText("allowance_reason")
    allowance_changed_at = models.DateTimeField(_("allowance step changed at"), null=True, blank=True)
    # New contacts per rolling 24 h, in hourly buckets (instances.caps.new_contacts_used): bucket i counts the new
    # contacts of the epoch hour in new_contact_hours[i]; a bucket of an older hour counts nothing.
    new_contact_hours = ArrayField(models.IntegerField(), verbose_name=_("new-contact bucket hours"),
                                   default=_new_contact_buckets)
    new_contact_counts = ArrayField(models.IntegerField(), verbose_name=_("new contacts per bucket"),
                                    default=_new_contact_buckets)
    # Every bucket's count added up, stale ones too: never below the rolling count, so a chip whose total is under
    # its cap has room without the per-bucket sum (instances.caps.new_contacts_room). Written with the buckets, in
    # the same statement: by a reservation (instances.reservations) and by `save`.
    new_contact_total = models.IntegerField(_("new contacts in all buckets"), default=0, editable=False)
    signals_since = models.DateTimeField(
        _("delivery figures count from"), null=True, blank=True,
        help_text=_("The early warning judges the chip's delivery outcomes from here (the end of its last rest)."),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("chip capacity")
        verbose_name_plural = _("chip capacities")

    def __str__(self) -> str:
        return _("capacity of chip %(chip)s") % {"chip": self.chip_id}

    def save(self, *args, **kwargs) -> None:
        self.new_contact_total = sum(max(n or 0, 0) for n in self.new_contact_counts)
        if (fields := kwargs.get("update_fields")) is not None and "new_contact_counts" in fields:
            kwargs["update_fields"] = {*fields, "new_contact_total"}
        super().save(*args, **kwargs)


class ContactBindingQuerySet(models.QuerySet["ContactBinding"]):
    def current(self) -> ContactBindingQuerySet:
        return self.filter(released_at__isnull=True)


class ContactBinding(models.Model):
    """Sticky contact → chip, so a contact always hears from the same number until it must move."""

    class Origin(models.TextChoices):
        ROUTED = "routed", _("Routed (new contact)")
        MOVED = "moved", _("Moved from another chip")
        INBOUND = "inbound", _("The contact wrote first")

    contact = models.CharField(_("contact"), max_length=16)
    chip = models.ForeignKey(Chip, on_delete=models.PROTECT, related_name="bindings", verbose_name=_("chip"))
    origin = models.CharField(_("origin"), max_length=10, choices=Origin.choices, default=Origin.ROUTED)
    previous_chip = models.ForeignKey(Chip, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                                      verbose_name=_("previous chip"))
    move_reason = models.CharField(_("move reason"), max_length=200, blank=True)
    last_used_at = models.DateTimeField(_("last used at"), default=timezone.now)
    expires_at = models.DateTimeField(_("expires at"))
    released_at = models.DateTimeField(_("released at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = ContactBindingQuerySet.as_manager()

    class Meta:
        verbose_name = _("contact binding")
        verbose_name_plural = _("contact bindings")
        ordering = ["-id"]
        constraints = [
            # One current binding per contact: two concurrent first messages cannot bind it twice.
            models.UniqueConstraint(fields=["contact"], condition=Q(released_at__isnull=True),
                                    name="binding_one_current_per_contact"),
        ]
        indexes = [
            # Moving a chip's bindings, and the new-contacts-per-24h count of a chip.
            models.Index(fields=["chip", "created_at"], condition=Q(released_at__isnull=True),
                         name="binding_current_chip_idx"),
        ]

    def __str__(self) -> str:
        return _("%(contact)s → chip %(chip)s") % {"contact": self.contact, "chip": self.chip_id}


class OutboundMessage(models.Model):
    """A message other systems asked us to send: stored before Evolution is called, sent at most once."""

    class Status(models.TextChoices):
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")
        DELIVERED = "delivered", _("Delivered")
        READ = "read", _("Read")
        FAILED = "failed", _("Failed")

    class Kind(models.TextChoices):
        PROSPECTING = "prospecting", _("Prospecting (a contact who never wrote)")
        FOLLOW_UP = "follow_up", _("Follow-up")
        REPLY = "reply", _("Reply (the contact wrote within 24 h)")

    idempotency_key = models.CharField(_("idempotency key"), max_length=100, unique=True)
    contact = models.CharField(_("contact"), max_length=16)
    chip = models.ForeignKey(Chip, on_delete=models.PROTECT, related_name="outbound_messages",
                             verbose_name=_("chip"))
    kind = models.CharField(_("kind"), max_length=12, choices=Kind.choices, default=Kind.FOLLOW_UP)
    text = models.TextField(_("text"))
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.SENDING)
    evolution_message_id = models.CharField(_("gateway message id"), max_length=64, null=True, blank=True)
    first_contact = models.BooleanField(
        _("first message to this contact from this chip"), default=False,
        help_text=_("A reach-out: its refusal is the restriction signal (field notes §1)."),
    )
    error = models.CharField(_("error"), max_length=500, blank=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True)
    read_at = models.DateTimeField(_("read at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("outbound message")
        verbose_name_plural = _("outbound messages")
        ordering = ["-id"]
        indexes = [
            # messages.update webhooks find the message by Evolution's key id.
            models.Index(fields=["evolution_message_id"], name="outbound_evolution_id_idx"),
            # Per-contact courtesy: a contact's messages of the last hour / 24 h (instances.courtesy).
            models.Index(fields=["contact", "created_at"], name="outbound_contact_at_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.idempotency_key} → {self.contact} ({self.get_status_display()})"


class DeliveryEvent(models.Model):
    """What happened to a chip's traffic: the trust score's raw material (acks, failures, replies)."""

    class Kind(models.TextChoices):
        INBOUND = "inbound", _("Inbound message")
        SERVER_ACK = "server_ack", _("Server ack")
        DELIVERED = "delivered", _("Delivered")
        READ = "read", _("Read")
        FAILED = "failed", _("Failed")
        TIMELOCK = "timelock", _("Reach-out timelock (463)")
        DISCONNECTED = "disconnected", _("Disconnected")
        # Written by every sender through instances.services (the API's sends and the warmer's): the early
        # warning's denominators.
        SENT = "sent", _("Sent (the gateway accepted it)")
        SEND_FAILED = "send_failed", _("Send failed (the gateway refused or failed)")

    chip = models.ForeignKey(Chip, on_delete=models.CASCADE, related_name="delivery_events", verbose_name=_("chip"))
    kind = models.CharField(_("kind"), max_length=15, choices=Kind.choices)
    message_id = models.CharField(_("message id"), max_length=64, blank=True)
    remote = models.CharField(_("remote phone"), max_length=32, blank=True)
    remote_lid = models.CharField(_("remote LID"), max_length=32, blank=True)
    first_contact = models.BooleanField(_("first contact"), default=False)
    detail = models.CharField(_("detail"), max_length=200, blank=True)
    occurred_at = models.DateTimeField(_("occurred at"), default=timezone.now)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("delivery event")
        verbose_name_plural = _("delivery events")
        ordering = ["-occurred_at"]
        indexes = [
            # The trust score reads one chip's events over a 7-day window.
            models.Index(fields=["chip", "occurred_at"], name="deliveryevent_chip_at_idx"),
            # The restriction signal: a chip's failed first contacts in the last hours.
            models.Index(fields=["chip", "occurred_at"], condition=Q(kind="failed", first_contact=True),
                         name="deliveryevent_failed_first_idx"),
        ]

    def __str__(self) -> str:
        return _("%(kind)s on chip %(chip)s") % {"kind": self.get_kind_display(), "chip": self.chip_id}


# The contacts' side (who wrote, who opted out, LIDs) lives in instances/contacts_models.py and the gateway's stored
# message events (the webhook's inbox) in instances/inbox_models.py; imported here so Django finds them.
from instances.contacts_models import ContactIdentity, ContactSuppression, InboundMessage, OptOutRule  # noqa: E402, F401, I001
from instances.inbox_models import WebhookReceipt  # noqa: E402, F401
