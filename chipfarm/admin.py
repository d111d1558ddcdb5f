"""Operators' screens for the pool: configuration, dashboard, operations log, API keys."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse, reverse_lazy
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy, ngettext
from django.utils.translation import gettext_lazy as _

from chipfarm import third_party_admin  # noqa: F401 - re-registers celery-beat's and axes' screens
from chipfarm.attention import attention_filter, attention_kinds
from chipfarm.chip_admin import LinkingAdminMixin
from chipfarm.chip_page import chip_overview
from chipfarm.dashboard import HEALTH_LABELS, dashboard_context
from chipfarm.models import (
    ApiKey,
    ChipRelease,
    OrchestratorOperation,
    PoolConfiguration,
    PoolSnapshot,
    SlackIdentity,
)
from chipfarm.orchestrator import run_cycle
from chipfarm.pool import pool_limits
from chips.admin import (
    PHONE_LIKE,
    REASON_REQUIRED,
    STATUS_COLOURS,
    ChipAdmin,
    PhoneSearchMixin,
    ReadOnlyAdmin,
    SuperuserDeleteMixin,
)
from chips.models import Chip
from common.csv_export import csv_export_action
from common.exceptions import DomainError
from instances.caps import caps_annotations, usage_annotations
from instances.phones import normalize_contact
from instances.services import sending_pause, sending_resume

# "View site" leads to the pool dashboard: the admin is the site.
admin.site.site_url = reverse_lazy("admin:chipfarm_dashboard")

# The orchestrator's steps (chipfarm.orchestrator.run_cycle), as the cycle's message names them.
CYCLE_STEP_LABELS = {"replace": _("replaced"), "resume": _("resumed"), "promote_ready": _("promoted to ready"),
                     "promote_active": _("promoted to active"), "provision": _("lines bought"),
                     "release": _("released")}


class AttentionFilter(admin.SimpleListFilter):
    """The dashboard's "needs attention" groups, as a filter of the chip list (chipfarm.attention)."""

    title = gettext_lazy("needs attention")
    parameter_name = "attention"

    def lookups(self, request, model_admin):
        return [(kind.key, kind.title) for kind, _q in attention_kinds(pool_limits(), timezone.now())]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        return attention_filter(queryset, self.value(), pool_limits(), timezone.now())


@admin.register(Chip)
class PoolChipAdmin(LinkingAdminMixin, ChipAdmin):
    """The chip page, composed here: chips' own admin plus what the apps above it know (DESIGN §11), so no app
    changes another app's admin class. The top of the page (chipfarm.chip_page) answers what an operator asks
    about one chip; below it the history and the open alerts. Plus adding own numbers, linking, and the
    pipeline's retry/cancel."""

    list_display = ["id", "phone", "status_badge", "trust", "warming_phase", "is_connected", "usage_today",
                    "updated"]
    list_filter = [AttentionFilter, *ChipAdmin.list_filter]
    inlines = [*ChipAdmin.inlines]
    actions = [*ChipAdmin.actions, "retry_pipeline", "cancel_pipeline"]

    def get_queryset(self, request):
        # Usage today against the cap in effect, in the list's one query (instances.caps, same rule as routing).
        return super().get_queryset(request).annotate(
            **caps_annotations(chip_path="", capacity_path="capacity__"),
            **usage_annotations(timezone.now(), capacity_path="capacity__"),
        )

    @admin.display(description=gettext_lazy("sent today"), ordering="used_day")
    def usage_today(self, chip: Chip) -> str:
        if not chip.cap_per_day and not chip.used_day:
            return "—"
        return f"{chip.used_day} / {chip.cap_per_day}"

    def get_search_results(self, request, queryset, search_term):
        # A number in any common format: also try it as the E.164 number it stands for ("61 98765-4321").
        term = (search_term or "").strip()
        if PHONE_LIKE.match(term):
            try:
                e164 = normalize_contact(term)
            except ValueError:
                e164 = None
            results, distinct = super().get_search_results(request, queryset, search_term)
            return (results | queryset.filter(phone=e164) if e164 else results), distinct
        return super().get_search_results(request, queryset, search_term)

    def _get_fsm_extra_context(self, *, request, obj):
        return list(super()._get_fsm_extra_context(request=request, obj=obj))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        chip = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if chip is not None:
            extra["overview"] = chip_overview(chip)
            extra["reason_required"] = REASON_REQUIRED
            extra["status_colour"] = STATUS_COLOURS.get(chip.status, "#6c757d")
        return super().change_view(request, object_id, form_url=form_url, extra_context=extra)


@admin.register(ApiKey)
class ApiKeyAdmin(SuperuserDeleteMixin, admin.ModelAdmin):
    list_display = ["name", "prefix", "is_active", "last_used_at", "created_at"]
    list_filter = ["is_active"]
    readonly_fields = ["name", "prefix", "last_used_at", "created_at", "updated_at"]
    fields = ["name", "prefix", "is_active", "last_used_at", "created_at", "updated_at"]

    def has_add_permission(self, request) -> bool:
        return False  # keys are issued by `manage.py create_api_key`, which shows the key once


@admin.register(PoolConfiguration)
class PoolConfigurationAdmin(admin.ModelAdmin):
    fieldsets = [
        (_("Targets"), {"fields": ["production_min", "production_max", "ready_min", "warmup_buffer"]}),
        (_("Lifecycle thresholds"), {"fields": ["warmup_days", "trust_min_for_ready", "trust_degraded_threshold",
                                                "disconnected_degrade_minutes"]}),
        (_("Provisioning"), {"fields": ["auto_provision", "default_area_code", "provision_batch_max",
                                        "provision_daily_budget"]}),
    ]

    def has_add_permission(self, request) -> bool:
        return not PoolConfiguration.objects.exists()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        # One row: the list is the form.
        config = PoolConfiguration.objects.filter(pk=1).first()
        if config is None:
            if not (request.method == "GET" and self.has_change_permission(request)):
                # Looking writes nothing: until an operator opens it, the defaults apply.
                self.message_user(request, _("The pool configuration was never saved: the defaults apply."),
                                  messages.INFO)
                return HttpResponseRedirect(reverse("admin:chipfarm_dashboard"))
            config = PoolConfiguration.defaults()
            config.save()
        return HttpResponseRedirect(reverse("admin:chipfarm_poolconfiguration_change", args=[config.pk]))

    def get_urls(self):
        return [
            path("dashboard/", self.admin_site.admin_view(self.dashboard_view), name="chipfarm_dashboard"),
            *super().get_urls(),
        ]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        can_act = self.has_change_permission(request)
        if request.method == "POST":
            if not can_act:
                raise PermissionDenied
            self._dashboard_action(request)
            return HttpResponseRedirect(request.path)
        context = {**self.admin_site.each_context(request),
                   **dashboard_context(chart_range=request.GET.get("range", "day")), "can_act": can_act,
                   "title": _("Pool dashboard"), "opts": self.model._meta}
        return TemplateResponse(request, "admin/chipfarm/dashboard.html", context)

    def _dashboard_action(self, request: HttpRequest) -> None:
        action = request.POST.get("action")
        who = request.user.get_username()
        if action == "run_cycle":
            report = run_cycle()
            if not report.ran:
                self.message_user(request, _("Another cycle is running; try again in a moment."), messages.WARNING)
            else:
                steps = ", ".join(f"{CYCLE_STEP_LABELS.get(k, k)} {v}" for k, v in report.steps.items())
                level = messages.WARNING if report.errors else messages.SUCCESS
                self.message_user(request, _("Cycle done: %(steps)s; health: %(health)s.")
                                  % {"steps": steps, "health": HEALTH_LABELS.get(report.health, report.health)},
                                  level)
        elif action == "pause":
            try:  # a blank (or whitespace) reason is refused by the service, like everywhere
                sending_pause(reason=request.POST.get("reason") or "", by=who)
            except DomainError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                return
            self.message_user(request, _("Sending is paused."), messages.WARNING)
        elif action == "resume":
            sending_resume(by=who)
            self.message_user(request, _("Sending resumed."), messages.SUCCESS)
        elif action == "buy_lines":
            self._buy_lines(request)
        else:
            self.message_user(request, _("Unknown action."), messages.ERROR)


    def _buy_lines(self, request: HttpRequest) -> None:
        from chipfarm.numbers import lines_buy
        from chips.services import Actor

        try:
            count = int(request.POST.get("count") or 0)
        except ValueError:
            count = 0
        try:
            chips = lines_buy(count=count, area_code=(request.POST.get("area_code") or "").strip() or None,
                              actor=Actor.user(request.user))
        except DomainError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        self.message_user(request, ngettext("%(n)d line is being bought.", "%(n)d lines are being bought.",
                                            len(chips)) % {"n": len(chips)}, messages.SUCCESS)


@admin.register(OrchestratorOperation)
class OrchestratorOperationAdmin(PhoneSearchMixin, ReadOnlyAdmin):
    list_display = ["created_at", "kind", "actor", "chip", "target_chip", "short_reason", "success"]
    list_filter = ["kind", "success"]
    list_select_related = ["chip", "target_chip"]
    search_fields = ["reason", "error", "chip__phone", "target_chip__phone"]
    phone_search_fields = ("chip__phone", "target_chip__phone")
    raw_id_fields = ["chip", "target_chip"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    actions = [csv_export_action([
        (_("created at"), lambda o: o.created_at),
        (_("operation"), lambda o: o.get_kind_display()),
        (_("by"), lambda o: o.actor),
        (_("chip"), lambda o: o.chip),
        (_("target chip"), lambda o: o.target_chip),
        (_("reason"), lambda o: o.reason_text),
        (_("success"), lambda o: o.success),
        (_("error"), lambda o: o.error),
    ], basename="operations")]

    @admin.display(description=_("reason"), ordering="reason")
    def short_reason(self, operation: OrchestratorOperation) -> str:
        reason = operation.reason_text
        text = reason if len(reason) <= 90 else reason[:87] + "…"
        if operation.error:
            return format_html('{}<br><small style="color:#ba2121">{}</small>', text, operation.error[:120])
        return text


class HealthFilter(admin.SimpleListFilter):
    title = _("health")
    parameter_name = "health"

    def lookups(self, request, model_admin):
        return list(HEALTH_LABELS.items())

    def queryset(self, request, queryset):
        return queryset.filter(health=self.value()) if self.value() else queryset


@admin.register(PoolSnapshot)
class PoolSnapshotAdmin(ReadOnlyAdmin):
    list_display = ["taken_at", "health_label", "counts_by_state"]
    list_filter = [HealthFilter]
    date_hierarchy = "taken_at"
    show_full_result_count = False
    rendered_fields = {"health": "health_label", "counts": "counts_by_state"}

    @admin.display(description=_("health"), ordering="health")
    def health_label(self, snapshot: PoolSnapshot) -> str:
        return snapshot.health_label

    @admin.display(description=_("counts"))
    def counts_by_state(self, snapshot: PoolSnapshot) -> str:
        labels = dict(Chip.Status.choices)
        return ", ".join(f"{labels.get(state, state)}: {n}" for state, n in snapshot.counts.items())


@admin.register(ChipRelease)
class ChipReleaseAdmin(ReadOnlyAdmin):
    list_display = ["chip", "reason", "instance_deleted_at", "line_canceled_at", "instance_attempts",
                    "line_attempts", "next_attempt_at", "gave_up_at", "last_error"]
    list_filter = [("instance_deleted_at", admin.EmptyFieldListFilter),
                   ("line_canceled_at", admin.EmptyFieldListFilter)]
    list_select_related = ["chip"]
    raw_id_fields = ["chip"]

    @admin.display(description=_("last error"))
    def last_error(self, release: ChipRelease) -> str:
        return release.instance_error or release.line_error


@admin.register(SlackIdentity)
class SlackIdentityAdmin(SuperuserDeleteMixin, admin.ModelAdmin):
    """Who may run the Slack slash commands, as whom (the user must also be an active Operator)."""

    list_display = ["slack_user_id", "user", "may_act", "updated_at"]
    list_select_related = ["user"]
    search_fields = ["slack_user_id", "user__username", "user__first_name", "user__last_name"]
    autocomplete_fields = ["user"]
    readonly_fields = ["created_at", "updated_at"]

    def get_queryset(self, request):
        return super().get_queryset(request).with_may_act()

    @admin.display(description=_("may act from Slack"), boolean=True, ordering="may_act")
    def may_act(self, identity: SlackIdentity) -> bool:
        return identity.may_act
