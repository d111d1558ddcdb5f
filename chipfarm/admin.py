"""Operators' screens for the pool: configuration, dashboard, operations log, API keys."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from chipfarm.chip_admin import LinkingAdminMixin
from chipfarm.dashboard import dashboard_context
from chipfarm.models import (
    ApiKey,
    ChipRelease,
    OrchestratorOperation,
    PoolConfiguration,
    PoolSnapshot,
    SlackIdentity,
)
from chipfarm.orchestrator import run_cycle
from chips.admin import ChipAdmin, ReadOnlyAdmin
from chips.models import Chip
from instances.admin import ChipCapacityInline, InstanceInline
from instances.services import sending_pause, sending_resume
from warmer.admin import DailyMetricsInline


@admin.register(Chip)
class PoolChipAdmin(LinkingAdminMixin, ChipAdmin):
    """The chip page, composed here: chips' own admin with the inlines of the apps above it (DESIGN §11), so no
    app changes another app's admin class; plus adding own numbers, linking, and the pipeline's retry/cancel."""

    inlines = [*ChipAdmin.inlines, InstanceInline, ChipCapacityInline, DailyMetricsInline]
    actions = [*ChipAdmin.actions, "retry_pipeline", "cancel_pipeline"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
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
        context = {**self.admin_site.each_context(request), **dashboard_context(), "can_act": can_act,
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
                steps = ", ".join(f"{k} {v}" for k, v in report.steps.items())
                level = messages.WARNING if report.errors else messages.SUCCESS
                self.message_user(request, _("Cycle done: %(steps)s; health %(health)s.")
                                  % {"steps": steps, "health": report.health}, level)
        elif action == "pause":
            reason = (request.POST.get("reason") or "").strip()
            if not reason:
                self.message_user(request, _("Give a reason to pause sending."), messages.ERROR)
                return
            sending_pause(reason=reason, by=who)
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
        from common.exceptions import DomainError

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
class OrchestratorOperationAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "kind", "actor", "chip", "target_chip", "reason", "success", "error"]
    list_filter = ["kind", "success"]
    list_select_related = ["chip", "target_chip"]
    search_fields = ["reason", "error", "chip__phone", "target_chip__phone"]
    raw_id_fields = ["chip", "target_chip"]
    date_hierarchy = "created_at"
    show_full_result_count = False


@admin.register(PoolSnapshot)
class PoolSnapshotAdmin(ReadOnlyAdmin):
    list_display = ["taken_at", "health", "counts"]
    list_filter = ["health"]
    date_hierarchy = "taken_at"
    show_full_result_count = False


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
class SlackIdentityAdmin(admin.ModelAdmin):
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
