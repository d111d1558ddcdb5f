"""Operators' screens for chips and alerts."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django_fsm.admin import FSMAdminMixin

from chips import services
from chips.models import Chip, ChipAlert, ChipTransition, TrustLevel
from common.exceptions import DomainError

STATUS_COLOURS = {
    Chip.Status.PROVISIONING: "#6c757d",
    Chip.Status.PENDING: "#6c757d",
    Chip.Status.ACTIVATING: "#0d6efd",
    Chip.Status.WARMING: "#fd7e14",
    Chip.Status.READY: "#20c997",
    Chip.Status.ACTIVE: "#198754",
    Chip.Status.COOLING: "#0dcaf0",
    Chip.Status.DEGRADED: "#ffc107",
    Chip.Status.BANNED: "#dc3545",
    Chip.Status.RETIRED: "#343a40",
}


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records the system writes (history, logs, events): operators look, nobody adds or edits."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class TrustLevelFilter(admin.SimpleListFilter):
    title = _("trust level")
    parameter_name = "trust_level"

    def lookups(self, request, model_admin):
        return TrustLevel.choices

    def queryset(self, request, queryset):
        return queryset.filter(trust_level=self.value()) if self.value() else queryset


class ChipTransitionInline(admin.TabularInline):
    model = ChipTransition
    extra = 0
    can_delete = False
    ordering = ["-created_at", "-id"]
    fields = ["created_at", "source", "target", "transition", "reason", "actor_kind", "actor_id"]
    readonly_fields = fields
    verbose_name_plural = _("history")

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class OpenAlertInline(admin.TabularInline):
    model = ChipAlert
    extra = 0
    can_delete = False
    fields = ["last_raised_at", "severity", "kind", "message", "occurrences", "acknowledged_at"]
    readonly_fields = fields
    verbose_name_plural = _("alerts")

    def has_add_permission(self, request, obj=None) -> bool:
        return False


def _bulk(transition: str, label: str):
    """An admin action running one operator transition on every selected chip, reporting each refusal."""

    def action(modeladmin: ChipAdmin, request: HttpRequest, queryset: QuerySet[Chip]) -> None:
        result = services.chips_bulk_transition(
            chip_ids=queryset.values_list("pk", flat=True),
            transition=transition,
            actor=services.Actor.user(request.user),
            reason=str(_("bulk action from the admin")),
        )
        if result.succeeded:
            modeladmin.message_user(
                request,
                ngettext("%(count)d chip: %(action)s done.", "%(count)d chips: %(action)s done.",
                         len(result.succeeded)) % {"count": len(result.succeeded), "action": label},
                messages.SUCCESS,
            )
        for chip_id, why in sorted(result.failed.items()):
            modeladmin.message_user(request, _("Chip %(id)s not changed: %(why)s") % {"id": chip_id, "why": why},
                                    messages.WARNING)
        if not result.succeeded and not result.failed:
            modeladmin.message_user(request, _("No chip selected."), messages.INFO)

    action.__name__ = f"bulk_{transition}"
    return admin.action(description=label, permissions=["run_transitions"])(action)


class ChipAdmin(FSMAdminMixin, admin.ModelAdmin):
    """The chip page. Not registered here: the pool app (chipfarm.admin) registers it with the inlines of the
    apps above chips (instance, capacity, warming metrics), which chips may not know (DESIGN §11)."""

    fsm_fields = ["status"]
    list_display = [
        "id", "phone", "status_badge", "trust_score", "trust_level", "warming_phase", "is_connected",
        "area_code", "instance_name", "updated_at",
    ]
    list_display_links = ["id", "phone"]
    list_filter = ["status", TrustLevelFilter, "area_code", "is_connected"]
    search_fields = ["phone", "instance_name", "provider_line_id"]
    ordering = ["-id"]
    list_per_page = 50
    show_full_result_count = False
    inlines = [ChipTransitionInline, OpenAlertInline]
    actions = [
        _bulk("promote_to_ready", _("Promote to ready")),
        _bulk("promote_to_active", _("Promote to active")),
        _bulk("rewarm", _("Rewarm")),
        _bulk("retire", _("Retire")),
    ]
    fieldsets = [
        (None, {"fields": ["status", "phone", "area_code", "provider_line_id", "instance_name"]}),
        (_("Trust and warming"), {"fields": ["trust_score", "trust_level", "warming_phase", "warming_started_at"]}),
        (_("Connection"), {"fields": ["is_connected", "connection_changed_at", "cooling_until",
                                      "activation_attempts"]}),
        (_("Timeline"), {"fields": ["created_at", "provisioned_at", "activation_started_at", "activated_at",
                                    "ready_at", "active_at", "degraded_at", "banned_at", "retired_at",
                                    "updated_at"]}),
    ]

    def get_readonly_fields(self, request, obj=None):
        # Every fact on a chip is written by the lifecycle or by the system's checks: the page shows
        # them and offers the transitions; nothing is typed in by hand.
        return [f for fs in self.fieldsets for f in fs[1]["fields"]]

    def has_add_permission(self, request) -> bool:
        return False  # chips are bought by provisioning, not typed in

    def has_run_transitions_permission(self, request) -> bool:
        return request.user.has_perm("chips.run_chip_transitions")

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, chip: Chip) -> str:
        return format_html(
            '<span class="chip-status chip-status-{}" style="background:{};color:#fff;padding:2px 8px;'
            'border-radius:10px;font-size:11px;white-space:nowrap">{}</span>',
            chip.status, STATUS_COLOURS.get(chip.status, "#6c757d"), chip.get_status_display(),
        )

    def _apply_fsm_transition(self, *, obj: Chip, transition_name: str, request: HttpRequest, kwargs=None) -> bool:
        # The buttons go through the same service as every other caller: history row, guards,
        # conflict handling, permission to act.
        if not self.has_run_transitions_permission(request):
            self.message_user(request, _("You may not change chips."), messages.ERROR)
            return False
        try:
            services.chip_transition(
                chip=obj.pk,
                transition=transition_name,
                actor=services.Actor.user(request.user),
                reason=str(_("from the admin")),
                operator_only=True,
                params=dict(kwargs or {}),
            )
        except DomainError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return False
        self.message_user(request, _("%(transition)s done.") % {"transition": transition_name}, messages.SUCCESS)
        return True


@admin.register(ChipAlert)
class ChipAlertAdmin(admin.ModelAdmin):
    list_display = ["last_raised_at", "severity", "kind", "chip", "short_message", "occurrences",
                    "action_taken", "acknowledged_at", "acknowledged_by"]
    list_filter = ["severity", "kind", ("acknowledged_at", admin.EmptyFieldListFilter)]
    list_select_related = ["chip", "acknowledged_by"]
    search_fields = ["message", "kind", "chip__phone", "dedup_key"]
    raw_id_fields = ["chip"]
    readonly_fields = ["chip", "severity", "kind", "message", "action_taken", "dedup_key", "occurrences",
                       "last_raised_at", "acknowledged_by", "acknowledged_at", "created_at", "updated_at"]
    actions = ["acknowledge"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description=_("message"))
    def short_message(self, alert: ChipAlert) -> str:
        return alert.message if len(alert.message) <= 90 else alert.message[:87] + "…"

    @admin.action(description=_("Acknowledge selected alerts"), permissions=["change"])
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[ChipAlert]) -> None:
        count = services.alerts_acknowledge(alert_ids=queryset.values_list("pk", flat=True), user=request.user)
        self.message_user(
            request,
            ngettext("%(count)d alert acknowledged.", "%(count)d alerts acknowledged.", count) % {"count": count},
            messages.SUCCESS,
        )


@admin.register(ChipTransition)
class ChipTransitionAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "chip", "source", "target", "transition", "actor_kind", "actor_id", "reason"]
    list_filter = ["transition", "target", "actor_kind"]
    list_select_related = ["chip"]
    search_fields = ["chip__phone", "reason", "actor_id"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


