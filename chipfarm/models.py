"""The pool: API keys, its configuration, the orchestrator's operations log, snapshots and releases."""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import formats, timezone
from django.utils.translation import gettext_lazy as _

from chipfarm import defaults
from chips.groups import OPERATORS
from chips.policy import Limits
from common.texts import RenderedText, text_fields

# Slack member ids: U… (or W… in Enterprise Grid), upper-case letters and digits.
SLACK_USER_ID_RE = r"^[UW][A-Z0-9]{2,31}$"


def _digest(raw_key: str) -> str:
    # The keys are 256-bit random tokens: a plain SHA-256 is enough (no dictionary to attack) and lets
    # the lookup be one indexed equality instead of a slow hash per stored key.
    return hashlib.sha256(raw_key.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def matching(self, raw_key: str) -> ApiKeyQuerySet:
        return self.filter(key_hash=_digest(raw_key), is_active=True)


class ApiKey(models.Model):
    """A key another system sends in `X-API-Key`. Only its hash is stored; the key is shown once."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    prefix = models.CharField(_("prefix"), max_length=12, help_text=_("First characters, to recognise a key."))
    key_hash = models.CharField(_("key hash"), max_length=64, unique=True, editable=False)
    is_active = models.BooleanField(_("active"), default=True)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, *, name: str) -> tuple[ApiKey, str]:
        """Create a key; returns the row and the raw key, which is never stored."""
        raw = f"cf_{secrets.token_urlsafe(32)}"
        key = cls.objects.create(name=name, prefix=raw[:10], key_hash=_digest(raw))
        return key, raw


class PoolConfiguration(models.Model):
    """One row: the pool's targets and thresholds (DESIGN §3), edited in the admin.

    The lifecycle thresholds default to the settings (chipfarm.defaults); every rule on the values is a check
    constraint whose message model validation (the admin's form) shows.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    production_min = models.PositiveIntegerField(_("production minimum"), default=5)
    production_max = models.PositiveIntegerField(_("production maximum"), default=defaults.production_max,
                                                 help_text=_("Default: MAX_CHIPS_ACTIVE."))
    ready_min = models.PositiveIntegerField(_("ready minimum"), default=2)
    warmup_buffer = models.PositiveIntegerField(_("warming buffer"), default=4,
                                                help_text=_("Chips warming or on their way (pipeline included)."))
    warmup_days = models.PositiveIntegerField(_("warm-up days"), default=defaults.warmup_days,
                                              help_text=_("Default: WARMER_MIN_DAYS."))
    trust_min_for_ready = models.PositiveSmallIntegerField(_("trust minimum for ready"),
                                                           default=defaults.trust_min_for_ready,
                                                           help_text=_("Default: TRUST_MIN_FOR_READY."))
    trust_degraded_threshold = models.PositiveSmallIntegerField(_("trust degraded threshold"),
                                                                default=defaults.trust_degraded_threshold,
                                                                help_text=_("Default: TRUST_DEGRADED_THRESHOLD."))
    disconnected_degrade_minutes = models.PositiveIntegerField(_("minutes disconnected before degrading"),
                                                               default=defaults.disconnected_degrade_minutes,
                                                               help_text=_("Default: DISCONNECTED_DEGRADE_MINUTES."))
    auto_provision = models.BooleanField(_("provision automatically"), default=True)
    default_area_code = models.CharField(_("default area code (DDD)"), max_length=2, default="11")
    provision_batch_max = models.PositiveSmallIntegerField(_("lines bought per cycle at most"), default=3)
    provision_daily_budget = models.PositiveIntegerField(_("lines bought per day at most"), default=10)
    auto_reserve = models.BooleanField(
        _("size the reserve automatically"), default=False,
        help_text=_("Each cycle raises the ready minimum and the warming buffer toward the reserve forecast (bans and "
                    "degradations of the last 30 days, lead time from purchase to ready), never above the reserve "
                    "budget. It never lowers them."))
    reserve_budget = models.PositiveIntegerField(
        _("reserve budget (ready minimum + warming buffer)"), default=defaults.reserve_budget,
        help_text=_("The most chips the automatic reserve keeps outside production. Default: RESERVE_BUDGET."))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("pool configuration")
        verbose_name_plural = _("pool configuration")
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="poolconfig_single_row",
                                   violation_error_message=_("There is one pool configuration.")),
            models.CheckConstraint(condition=models.Q(production_min__lte=models.F("production_max")),
                                   name="poolconfig_production_min_le_max",
                                   violation_error_message=_("The production minimum cannot exceed the maximum.")),
            models.CheckConstraint(condition=models.Q(trust_min_for_ready__lte=100, trust_degraded_threshold__lte=100),
                                   name="poolconfig_thresholds_0_100",
                                   violation_error_message=_("Trust thresholds go from 0 to 100.")),
            models.CheckConstraint(condition=models.Q(trust_degraded_threshold__lt=models.F("trust_min_for_ready")),
                                   name="poolconfig_degraded_below_ready",
                                   violation_error_message=_("The degraded threshold must be below the ready "
                                                             "threshold.")),
            models.CheckConstraint(condition=models.Q(default_area_code__regex=r"^[1-9][0-9]$"),
                                   name="poolconfig_area_code",
                                   violation_error_message=_("A Brazilian area code has two digits, e.g. 11.")),
            models.CheckConstraint(condition=models.Q(provision_batch_max__lte=models.F("provision_daily_budget")),
                                   name="poolconfig_batch_within_budget",
                                   violation_error_message=_("The batch per cycle cannot exceed the daily budget.")),
        ]

    def __str__(self) -> str:
        return str(_("Pool configuration"))

    @classmethod
    def load(cls) -> PoolConfiguration:
        """The row, or an unsaved one with the defaults (reads never write)."""
        return cls.objects.filter(pk=1).first() or cls.defaults()

    @classmethod
    def defaults(cls) -> PoolConfiguration:
        """The unsaved row with every field at its default."""
        return cls(id=1)

    def limits(self) -> Limits:
        """The thresholds the lifecycle rules (chips) judge by."""
        return Limits(
            warmup_days=self.warmup_days,
            trust_min_for_ready=self.trust_min_for_ready,
            trust_degraded_threshold=self.trust_degraded_threshold,
            production_max=self.production_max,
            disconnected_degrade_minutes=self.disconnected_degrade_minutes,
        )


class OrchestratorOperation(models.Model):
    """What the orchestrator (or an operator through it) did, for audit."""

    class Kind(models.TextChoices):
        AUTO_REPLACE = "auto_replace", _("Automatic replacement")
        AUTO_PROVISION = "auto_provision", _("Automatic provisioning")
        PROMOTION_WARMING_READY = "promotion_warming_ready", _("Promotion warming → ready")
        PROMOTION_READY_ACTIVE = "promotion_ready_active", _("Promotion ready → active")
        DEMOTION = "demotion", _("Demotion")
        RESUME = "resume", _("Cooling over")
        MIGRATION = "migration", _("Binding migration")
        CANCEL = "cancel", _("Line cancellation")
        MANUAL_PROVISION = "manual_provision", _("Lines bought by hand")
        OWN_NUMBER = "own_number", _("Own number added")
        HEALTH_WATCH = "health_watch", _("Early warning: watch")
        HEALTH_REST = "health_rest", _("Early warning: rest")
        HEALTH_STOP = "health_stop", _("Early warning: stop")
        HEALTH_CLEAR = "health_clear", _("Early warning: clear")
        ALLOWANCE_STEP = "allowance_step", _("New-contact allowance step")
        RESERVE_TARGETS = "reserve_targets", _("Reserve targets raised")

    #: The purchases the daily budget counts (the orchestrator's and the operators').
    PURCHASES = (Kind.AUTO_PROVISION, Kind.MANUAL_PROVISION)

    kind = models.CharField(_("operation"), max_length=30, choices=Kind.choices)
    actor = models.CharField(_("by"), max_length=150, blank=True, help_text=_("Who asked: an operator, an API key."))
    chip = models.ForeignKey("chips.Chip", on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                             verbose_name=_("chip"))
    target_chip = models.ForeignKey("chips.Chip", on_delete=models.SET_NULL, null=True, blank=True,
                                    related_name="+", verbose_name=_("target chip"))
    reason = models.CharField(_("reason"), max_length=300, blank=True)
    reason_code, reason_params = text_fields()
    metadata = models.JSONField(_("metadata"), default=dict, blank=True)
    success = models.BooleanField(_("success"), default=True)
    error = models.TextField(_("error"), blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("orchestrator operation")
        verbose_name_plural = _("orchestrator operations")
        ordering = ["-created_at", "-id"]
        indexes = [
            # "Lines bought today" (the daily budget) and the operations log filtered by kind.
            models.Index(fields=["kind", "-created_at"], name="operation_kind_at_idx"),
        ]

    reason_text = RenderedText("reason")

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({_('ok') if self.success else _('failed')})"


class ChipHealth(models.Model):
    """The early warning's current level of one production chip (chipfarm.brain) and the figures that set it.

    Written only when the level changes, so the cycle's work follows the chips that change; the live figures are
    instances.health_signals (the chip page reads them through `chipfarm.brain.chip_health_summary`).
    """

    class Level(models.TextChoices):
        OK = "ok", _("OK")
        WATCH = "watch", _("Watch")
        REST = "rest", _("Rest")
        STOP = "stop", _("Stop")

    chip = models.OneToOneField("chips.Chip", on_delete=models.CASCADE, primary_key=True, related_name="health")
    level = models.CharField(_("level"), max_length=8, choices=Level.choices, default=Level.OK)
    since = models.DateTimeField(_("at this level since"))
    figures = models.JSONField(_("figures that set it"), default=dict, blank=True)
    reasons = models.JSONField(_("reasons"), default=list, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("chip health")
        verbose_name_plural = _("chip health")

    def __str__(self) -> str:
        return _("chip %(chip)s: %(level)s") % {"chip": self.chip_id, "level": self.get_level_display()}


class PoolSnapshot(models.Model):
    """Counts per state at a moment, for the dashboard's chart."""

    taken_at = models.DateTimeField(_("taken at"), db_index=True)
    counts = models.JSONField(_("counts"), default=dict)
    health = models.CharField(_("health"), max_length=10)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("pool snapshot")
        verbose_name_plural = _("pool snapshots")
        ordering = ["-taken_at"]

    def __str__(self) -> str:
        return f"{formats.date_format(timezone.localtime(self.taken_at), 'SHORT_DATETIME_FORMAT')} {self.health_label}"

    @property
    def health_label(self) -> str:
        from chipfarm.dashboard import HEALTH_LABELS

        return str(HEALTH_LABELS.get(self.health, self.health))


class ChipRelease(models.Model):
    """The outside resources of a retired chip given back: its gateway instance and its Salvy line.

    Each side is done on its own: the paid line is cancelled whatever the gateway answers (field notes §3), and the
    side that failed is retried at `next_attempt_at` with backoff (a due-at row, picked by the release sweep).
    """

    chip = models.OneToOneField("chips.Chip", on_delete=models.CASCADE, related_name="release",
                                verbose_name=_("chip"))
    reason = models.CharField(_("reason"), max_length=40)
    instance_deleted_at = models.DateTimeField(_("instance deleted at"), null=True, blank=True)
    line_canceled_at = models.DateTimeField(_("line canceled at"), null=True, blank=True)
    instance_attempts = models.PositiveSmallIntegerField(_("instance clean-up attempts"), default=0)
    instance_error = models.CharField(_("instance clean-up error"), max_length=300, blank=True)
    line_attempts = models.PositiveSmallIntegerField(_("line cancel attempts"), default=0)
    line_error = models.CharField(_("line cancel error"), max_length=300, blank=True)
    next_attempt_at = models.DateTimeField(_("next attempt at"), null=True, blank=True)
    gave_up_at = models.DateTimeField(_("gave up at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("chip release")
        verbose_name_plural = _("chip releases")
        indexes = [
            # The release sweep: unfinished releases that are due.
            models.Index(fields=["next_attempt_at"], condition=models.Q(gave_up_at__isnull=True,
                                                                        next_attempt_at__isnull=False),
                         name="chiprelease_due_idx"),
        ]

    def __str__(self) -> str:
        return _("release of chip %(chip)s") % {"chip": self.chip_id}

    @property
    def done(self) -> bool:
        return self.instance_deleted_at is not None and self.line_canceled_at is not None

    @property
    def pending(self) -> list[str]:
        """What is not given back yet: "instance", "line"."""
        return [side for side, at in (("instance", self.instance_deleted_at), ("line", self.line_canceled_at))
                if at is None]


class SlackIdentityQuerySet(models.QuerySet["SlackIdentity"]):
    def acting(self) -> SlackIdentityQuerySet:
        """The identities whose Slack commands are obeyed: their user is active and in the Operators group."""
        return self.filter(user__is_active=True, user__groups__name=OPERATORS)

    def with_may_act(self) -> SlackIdentityQuerySet:
        """`may_act` on each row, the same question as `acting()` (one subquery, not a query per row)."""
        return self.annotate(may_act=models.Exists(SlackIdentity.objects.acting().filter(pk=models.OuterRef("pk"))))


class SlackIdentity(models.Model):
    """A Slack user who acts as this Django user in the slash commands (chipfarm.slack_commands).

    Mapping alone gives nothing: the user must also be active and in the Operators group when a command arrives,
    so removing someone from the group (or deactivating them) stops their Slack commands at once.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="slack_identity",
                                verbose_name=_("user"))
    slack_user_id = models.CharField(
        _("Slack user id"), max_length=32, unique=True,
        validators=[RegexValidator(SLACK_USER_ID_RE, _("A Slack member id looks like U012AB3CD."))],
        help_text=_("The member id shown in the Slack profile (… → Copy member ID), e.g. U012AB3CD."))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = SlackIdentityQuerySet.as_manager()

    class Meta:
        verbose_name = _("Slack identity")
        verbose_name_plural = _("Slack identities")
        ordering = ["user__username"]
        constraints = [
            # Slack member ids are upper-case letters and digits; a pasted "@name" would never match anyone.
            models.CheckConstraint(condition=models.Q(slack_user_id__regex=SLACK_USER_ID_RE),
                                   name="slackidentity_user_id_format"),
        ]

    def __str__(self) -> str:
        return f"{self.slack_user_id} → {self.user}"
