"""The chip and its lifecycle (DESIGN §2).

Nothing writes `Chip.status` but the transition methods below, and nothing calls those but
`chips.services.chip_transition`, which wraps them in a transaction with their history row.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, models
from django.db.models import BooleanField, ExpressionWrapper, Q, Value
from django.db.models.sql import Query
from django.db.models.sql.constants import SINGLE
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django_fsm import ConcurrentTransitionMixin, FSMField, transition

from chips import policy
from common.texts import RenderedText, text_fields

# Transitions an operator may run (admin buttons, bulk actions, API). The others are driven by the
# system's own tasks and webhooks and stay hidden from people.
RUN_PERMISSION = "chips.run_chip_transitions"
OPERATOR = {"admin": True}
INTERNAL = {"admin": False}


class TrustLevel(models.TextChoices):
    HIGH = "high", _("High")
    MEDIUM = "medium", _("Medium")
    LOW = "low", _("Low")
    CRITICAL = "critical", _("Critical")

    @classmethod
    def for_score(cls, score: int) -> TrustLevel:
        if score >= 80:
            return cls.HIGH
        if score >= 60:
            return cls.MEDIUM
        if score >= 40:
            return cls.LOW
        return cls.CRITICAL


class WarmingPhase(models.TextChoices):
    """The warming ramp, in order (DESIGN §7); the last one is the final phase."""

    REST = "rest", _("Rest")
    FIRST_CONTACTS = "first_contacts", _("First contacts")
    GROWTH = "growth", _("Growth")
    PRE_OPERATION = "pre_operation", _("Pre-operation")
    OPERATION = "operation", _("Operation")

    @classmethod
    def first(cls) -> WarmingPhase:
        return cls.REST

    @classmethod
    def final(cls) -> WarmingPhase:
        return cls.OPERATION


# --- lifecycle criteria (DESIGN §2): each rule is defined once, as a filter ------------------------------
# The orchestrator's steps select their candidates with the QuerySet methods below; the transition guards
# evaluate the very same filter on the chip in hand (`Chip._holds`), so a guard and a step cannot disagree.

def _ready_q(limits: policy.Limits, now: datetime) -> Q:
    """promote_to_ready: warming, trust >= trust_min_for_ready, warmup_days of warming, the final phase."""
    return Q(status=Chip.Status.WARMING, warming_phase=WarmingPhase.final(),
             trust_score__gte=limits.trust_min_for_ready,
             warming_started_at__lte=now - timedelta(days=limits.warmup_days))


def _active_q(limits: policy.Limits) -> Q:
    """promote_to_active, per chip: ready, connected and trusted (not degradable). The pool-wide half of the
    rule (active < production_max) is `ChipQuerySet.production_room`."""
    return Q(status=Chip.Status.READY, is_connected=True, trust_score__gte=limits.trust_degraded_threshold)


def low_trust_q(limits: policy.Limits) -> Q:
    """Trust below trust_degraded_threshold (the trust half of degrade; the admin's "low trust" attention)."""
    return Q(trust_score__lt=limits.trust_degraded_threshold)


def _stopped_q() -> Q:
    return Q(stop_requested_at__isnull=False)


def _degrade_q(limits: policy.Limits, now: datetime) -> Q:
    """degrade: a ready or production chip whose trust fell below trust_degraded_threshold, that has been
    disconnected longer than disconnected_degrade_minutes, or that the pool's early warning stopped."""
    cutoff = now - timedelta(minutes=limits.disconnected_degrade_minutes)
    return Q(status__in=Chip.DEGRADABLE_STATES) & (
        low_trust_q(limits) | Q(is_connected=False, connection_changed_at__lt=cutoff) | _stopped_q()
    )


def _resume_q(now: datetime) -> Q:
    """resume: a cooling chip whose cooling_until has passed (or was never set)."""
    return Q(status=Chip.Status.COOLING) & (Q(cooling_until__isnull=True) | Q(cooling_until__lte=now))


class ChipQuerySet(models.QuerySet["Chip"]):
    def live(self) -> ChipQuerySet:
        return self.filter(status__in=Chip.LIVE_STATES)

    def in_production(self) -> ChipQuerySet:
        return self.filter(status__in=Chip.PRODUCTION_STATES)

    def pipeline(self) -> ChipQuerySet:
        """Chips on their way to warming: they count toward the warming buffer (DESIGN §3)."""
        return self.filter(status__in=Chip.PIPELINE_STATES)

    def promotable_to_ready(self, limits: policy.Limits, now: datetime) -> ChipQuerySet:
        return self.filter(_ready_q(limits, now))

    def promotable_to_active(self, limits: policy.Limits) -> ChipQuerySet:
        """The chips promote_to_active accepts while there is room (`production_room`)."""
        return self.filter(_active_q(limits))

    def degradable(self, limits: policy.Limits, now: datetime) -> ChipQuerySet:
        """The chips degrade accepts, each annotated with `is_low_trust` and `is_stopped` (else: disconnected too
        long)."""
        return self.filter(_degrade_q(limits, now)).annotate(
            is_low_trust=ExpressionWrapper(low_trust_q(limits), output_field=BooleanField()),
            is_stopped=ExpressionWrapper(_stopped_q(), output_field=BooleanField()),
        )

    def low_trust(self, limits: policy.Limits) -> ChipQuerySet:
        """Chips whose trust is below trust_degraded_threshold (the trust half of the degrade rule)."""
        return self.filter(low_trust_q(limits))

    def resumable(self, now: datetime) -> ChipQuerySet:
        return self.filter(_resume_q(now))

    def production_room(self, limits: policy.Limits) -> int:
        """How many more chips may become active (production_max minus the active ones; one count)."""
        return limits.production_max - self.filter(status=Chip.Status.ACTIVE).count()


class Chip(ConcurrentTransitionMixin, models.Model):
    class Status(models.TextChoices):
        PROVISIONING = "provisioning", _("Provisioning")
        PENDING = "pending", _("Pending activation")
        ACTIVATING = "activating", _("Activating")
        WARMING = "warming", _("Warming")
        READY = "ready", _("Ready")
        ACTIVE = "active", _("Active")
        COOLING = "cooling", _("Cooling")
        DEGRADED = "degraded", _("Degraded")
        BANNED = "banned", _("Banned")
        RETIRED = "retired", _("Retired")

    # A chip in provisioning has no WhatsApp number yet, so it cannot be banned; it can only be
    # retired (a purchase that never completed).
    LIVE_STATES = (
        Status.PENDING,
        Status.ACTIVATING,
        Status.WARMING,
        Status.READY,
        Status.ACTIVE,
        Status.COOLING,
        Status.DEGRADED,
    )
    PRODUCTION_STATES = (Status.ACTIVE, Status.COOLING)
    DEGRADABLE_STATES = (Status.READY, Status.ACTIVE, Status.COOLING)
    PIPELINE_STATES = (Status.PROVISIONING, Status.PENDING, Status.ACTIVATING)
    NOT_RETIRED = (*PIPELINE_STATES[:1], *LIVE_STATES, Status.BANNED)

    status = FSMField(
        _("status"),
        max_length=20,
        choices=Status.choices,
        default=Status.PROVISIONING,
        protected=True,
        db_index=True,
    )
    class Source(models.TextChoices):
        SALVY = "salvy", _("Bought from Salvy")
        OWN = "own", _("Owned by the company")

    phone = models.CharField(_("phone (E.164)"), max_length=16, null=True, blank=True)
    source = models.CharField(_("source"), max_length=8, choices=Source.choices, default=Source.SALVY)
    declared_warm = models.BooleanField(
        _("declared warm"), default=False,
        help_text=_("An aged number the operator declared warm: its warming starts at a later phase."))
    provider_line_id = models.CharField(_("Salvy line id"), max_length=64, null=True, blank=True)
    area_code = models.CharField(_("area code (DDD)"), max_length=2, db_index=True)
    instance_name = models.CharField(_("Evolution instance"), max_length=64, null=True, blank=True)

    trust_score = models.PositiveSmallIntegerField(_("trust score"), default=0)
    trust_level = models.CharField(
        _("trust level"), max_length=10, choices=TrustLevel.choices, default=TrustLevel.CRITICAL
    )
    warming_phase = models.CharField(
        _("warming phase"), max_length=20, choices=WarmingPhase.choices, null=True, blank=True
    )
    warming_started_at = models.DateTimeField(_("warming started at"), null=True, blank=True)

    is_connected = models.BooleanField(_("connected"), default=False)
    connection_changed_at = models.DateTimeField(_("connection changed at"), null=True, blank=True)
    cooling_until = models.DateTimeField(_("cooling until"), null=True, blank=True)
    stop_requested_at = models.DateTimeField(
        _("stop requested at"), null=True, blank=True,
        help_text=_("The pool's early warning found the chip in trouble: it is degraded and replaced."))
    stop_reason = models.CharField(_("stop reason"), max_length=300, blank=True)
    stop_reason_code, stop_reason_params = text_fields()
    activation_attempts = models.PositiveSmallIntegerField(_("activation attempts"), default=0)

    provisioned_at = models.DateTimeField(_("provisioned at"), null=True, blank=True)
    activation_started_at = models.DateTimeField(_("activation started at"), null=True, blank=True)
    activated_at = models.DateTimeField(_("activated at"), null=True, blank=True)
    ready_at = models.DateTimeField(_("ready at"), null=True, blank=True)
    active_at = models.DateTimeField(_("active at"), null=True, blank=True)
    degraded_at = models.DateTimeField(_("degraded at"), null=True, blank=True)
    banned_at = models.DateTimeField(_("banned at"), null=True, blank=True)
    retired_at = models.DateTimeField(_("retired at"), null=True, blank=True)

    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = ChipQuerySet.as_manager()

    class Meta:
        verbose_name = _("chip")
        verbose_name_plural = _("chips")
        ordering = ["id"]
        permissions = [("run_chip_transitions", _("Can run chip transitions"))]
        constraints = [
            # A number belongs to one living chip; a retired chip's number may come back from Salvy.
            models.UniqueConstraint(
                fields=["phone"],
                condition=~Q(status="retired"),
                name="chip_phone_unique_unless_retired",
            ),
            models.CheckConstraint(
                condition=Q(trust_score__gte=0, trust_score__lte=100), name="chip_trust_score_0_100"
            ),
            models.CheckConstraint(
                condition=Q(phone__isnull=True) | Q(phone__regex=r"^\+[1-9][0-9]{7,14}$"),
                name="chip_phone_e164",
            ),
            models.CheckConstraint(
                condition=Q(area_code__regex=r"^[1-9][0-9]$"), name="chip_area_code_two_digits"
            ),
        ]
        indexes = [
            # The router and the orchestrator rank candidates of one state by trust.
            models.Index(fields=["status", "-trust_score"], name="chip_status_trust_idx"),
            # Admin search and the Salvy webhook find a chip by its number or line.
            models.Index(fields=["phone"], name="chip_phone_idx"),
            models.Index(fields=["provider_line_id"], name="chip_line_idx"),
            models.Index(fields=["instance_name"], name="chip_instance_idx"),
        ]

    def __str__(self) -> str:
        return self.phone or _("chip #%(id)s (%(ddd)s)") % {"id": self.pk, "ddd": self.area_code}

    # --- derived facts -------------------------------------------------------------------------

    @classmethod
    def transition_label(cls, name: str) -> str:
        """The operator's words for a transition (buttons, history, messages); the name itself when unknown."""
        method = getattr(cls, name, None)
        transitions = getattr(getattr(method, "_django_fsm", None), "transitions", None)
        if not transitions:
            return name
        first = next(iter(transitions.values() if isinstance(transitions, dict) else transitions))
        return first.custom.get("label") or name  # lazy: translated where it is shown

    @classmethod
    def transition_help(cls, name: str) -> str:
        """What a transition does, for the confirmation page and the button's tooltip ("" when nothing is said)."""
        method = getattr(cls, name, None)
        transitions = getattr(getattr(method, "_django_fsm", None), "transitions", None)
        if not transitions:
            return ""
        first = next(iter(transitions.values() if isinstance(transitions, dict) else transitions))
        return first.custom.get("help_text") or ""

    @property
    def warming_days(self) -> int:
        if not self.warming_started_at:
            return 0
        return (timezone.now() - self.warming_started_at).days

    def set_trust(self, score: int) -> None:
        """Store a trust score (clamped to 0–100) with its level."""
        self.trust_score = max(0, min(100, int(score)))
        self.trust_level = TrustLevel.for_score(self.trust_score)

    def _holds(self, condition: Q) -> bool:
        """Whether this chip, as it is in memory, passes `condition`: PostgreSQL evaluates the filter on the
        chip's field values exactly as a WHERE clause would (NULL does not pass), without reading its row."""
        query = Query(None)
        for field in self._meta.concrete_fields:
            query.add_annotation(Value(getattr(self, field.attname), output_field=field), field.name, select=False)
        query.add_annotation(Value(1), "_holds")
        query.add_q(condition)
        return query.get_compiler(using=self._state.db or DEFAULT_DB_ALIAS).execute_sql(SINGLE) is not None

    # --- guards: side-effect-free predicates; the shared rules are the QuerySet's filters ---------------

    def _can_provision(self) -> bool:
        """A number and its session; a line bought from Salvy unless the company owns the number."""
        return bool(self.phone and self.instance_name and (self.provider_line_id or self.source == self.Source.OWN))

    def _can_promote_to_ready(self) -> bool:
        return self._holds(_ready_q(policy.current(), policy.now()))

    def _can_promote_to_active(self) -> bool:
        limits = policy.current()
        return self._holds(_active_q(limits)) and Chip.objects.production_room(limits) > 0

    def _can_resume(self) -> bool:
        return self._holds(_resume_q(policy.now()))

    def _can_degrade(self) -> bool:
        return self._holds(_degrade_q(policy.current(), policy.now()))

    def _can_rewarm(self) -> bool:
        return self.is_connected

    # --- transitions: in-memory changes only; the service saves and records -------------------

    @transition(status, source=Status.PROVISIONING, target=Status.PENDING, conditions=[_can_provision],
                custom={**INTERNAL, "label": _("Provisioned")})
    def provisioned(self) -> None:
        """The Salvy line is bought and its Evolution instance created."""
        self.provisioned_at = policy.now()

    @transition(status, source=Status.PENDING, target=Status.ACTIVATING,
                custom={**INTERNAL, "label": _("Activation started")})
    def start_activation(self) -> None:
        """A WhatsApp code arrived by SMS; an activation job takes it from here."""
        self.activation_started_at = policy.now()

    @transition(status, source=Status.ACTIVATING, target=Status.WARMING,
                custom={**INTERNAL, "label": _("Activation succeeded")})
    def activation_succeeded(self) -> None:
        """The number is registered and linked: warming starts at the first phase."""
        now = policy.now()
        self.activated_at = now
        self.warming_started_at = now
        self.warming_phase = WarmingPhase.first()
        self.is_connected = True
        self.connection_changed_at = now

    @transition(status, source=Status.PENDING, target=Status.WARMING, custom={**INTERNAL, "label": _("Linked")})
    def linked(self, phase: str | None = None, started_at: datetime | None = None) -> None:
        """A number the company owns was linked by QR or pairing code: warming starts (an aged number declared
        warm starts at a later `phase`, its ramp dated back to `started_at`)."""
        now = policy.now()
        self.warming_started_at = started_at or now
        self.activated_at = self.warming_started_at
        self.warming_phase = phase or WarmingPhase.first()
        self.is_connected = True
        self.connection_changed_at = now

    @transition(status, source=Status.ACTIVATING, target=Status.PENDING,
                custom={**INTERNAL, "label": _("Activation failed")})
    def activation_failed(self) -> None:
        """The activator failed or timed out: count the attempt and wait for another code."""
        self.activation_attempts += 1

    @transition(status, source=Status.WARMING, target=Status.READY, conditions=[_can_promote_to_ready],
                permission=RUN_PERMISSION, custom={**OPERATOR, "label": _("Promote to ready"),
                        "help_text": _("Warming is complete and trusted: the chip joins the reserve of ready "
                                       "chips.")})
    def promote_to_ready(self) -> None:
        """Warming is complete and trusted: the chip joins the reserve."""
        self.ready_at = policy.now()

    @transition(status, source=Status.READY, target=Status.ACTIVE, conditions=[_can_promote_to_active],
                permission=RUN_PERMISSION, custom={**OPERATOR, "label": _("Promote to active"),
                        "help_text": _("The chip starts taking the company's traffic.")})
    def promote_to_active(self) -> None:
        """The chip enters production: it is connected and trusted, and active < production_max."""
        self.active_at = policy.now()

    @transition(status, source=Status.ACTIVE, target=Status.COOLING, permission=RUN_PERMISSION,
                custom={**OPERATOR, "label": _("Cool down"),
                        "help_text": _("The chip stops taking traffic for a while, then goes back to production.")})
    def cool_down(self, until: datetime | None = None) -> None:
        """Rest a production chip until `until` (default: COOLING_MINUTES from now)."""
        self.cooling_until = until or policy.now() + timedelta(minutes=settings.COOLING_MINUTES)

    @transition(status, source=Status.COOLING, target=Status.ACTIVE, conditions=[_can_resume],
                permission=RUN_PERMISSION, custom={**OPERATOR, "label": _("Resume"),
                        "help_text": _("The cooling period is over: back to production.")})
    def resume(self) -> None:
        """The cooling period is over: back to production."""
        self.cooling_until = None

    @transition(status, source=DEGRADABLE_STATES, target=Status.DEGRADED,
                conditions=[_can_degrade], permission=RUN_PERMISSION,
                custom={**OPERATOR, "label": _("Degrade"),
                        "help_text": _("The chip leaves production; its contacts move to another chip.")})
    def degrade(self) -> None:
        """Trust fell below the degraded threshold, the chip has been disconnected too long, or the early warning
        stopped it."""
        self.degraded_at = policy.now()
        self.cooling_until = None
        self.stop_requested_at, self.stop_reason, self.stop_reason_code, self.stop_reason_params = None, "", "", {}

    @transition(status, source=Status.DEGRADED, target=Status.WARMING, conditions=[_can_rewarm],
                permission=RUN_PERMISSION, custom={**OPERATOR, "label": _("Rewarm"),
                        "help_text": _("Warming restarts at an earlier phase; the chip works again once it is "
                                       "warm.")})
    def rewarm(self) -> None:
        """A reconnected degraded chip warms again, from an earlier phase."""
        self.warming_phase = WarmingPhase.FIRST_CONTACTS
        self.warming_started_at = policy.now()

    @transition(status, source=LIVE_STATES, target=Status.BANNED, permission=RUN_PERMISSION,
                custom={**OPERATOR, "label": _("Mark banned"),
                        "help_text": _("WhatsApp closed this number for good: the chip stops and its contacts "
                                       "are released.")})
    def ban(self) -> None:
        """WhatsApp closed the number for good (402/403/406) or an operator says so."""
        self.banned_at = policy.now()
        self.is_connected = False
        self.connection_changed_at = self.banned_at
        self.cooling_until = None

    @transition(status, source=NOT_RETIRED, target=Status.RETIRED, permission=RUN_PERMISSION,
                custom={**OPERATOR, "label": _("Retire"),
                        "help_text": _("The chip leaves the pool for good: its WhatsApp session is deleted and "
                                       "its line cancelled.")})
    def retire(self) -> None:
        """The chip leaves the pool for good; its instance and line are released."""
        self.retired_at = policy.now()
        self.is_connected = False
        self.cooling_until = None


class ChipTransition(models.Model):
    """One row per status change, written in the transaction that made it."""

    class ActorKind(models.TextChoices):
        USER = "user", _("User")
        API = "api", _("API key")
        TASK = "task", _("Task")
        WEBHOOK = "webhook", _("Webhook")
        SYSTEM = "system", _("System")

    chip = models.ForeignKey(Chip, on_delete=models.CASCADE, related_name="transitions", verbose_name=_("chip"))
    source = models.CharField(_("from"), max_length=20, choices=Chip.Status.choices)
    target = models.CharField(_("to"), max_length=20, choices=Chip.Status.choices)
    transition = models.CharField(_("transition"), max_length=40)
    reason = models.CharField(_("reason"), max_length=500, blank=True)
    reason_code, reason_params = text_fields()
    reason_text = RenderedText("reason")
    actor_kind = models.CharField(_("actor kind"), max_length=10, choices=ActorKind.choices)
    actor_id = models.CharField(_("actor"), max_length=150, blank=True)
    created_at = models.DateTimeField(_("at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("chip transition")
        verbose_name_plural = _("chip transitions")
        ordering = ["-created_at", "-id"]
        indexes = [
            # A chip's history, newest first (detail API, admin inline).
            models.Index(fields=["chip", "-created_at"], name="chiptransition_chip_at_idx"),
            # "Banned in the last 7 days" and other per-target time windows.
            models.Index(fields=["target", "-created_at"], name="chiptransition_target_at_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_source_display()} → {self.get_target_display()} ({self.transition_label})"

    @property
    def transition_label(self) -> str:
        return Chip.transition_label(self.transition)


# Alerts and their Slack outbox live in chips/alerts.py (this module is the chip and its lifecycle); imported here
# so Django finds them as chips' models.
from chips.alerts import ChipAlert, ChipAlertQuerySet, Notification  # noqa: E402, F401
