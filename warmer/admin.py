"""Warming in the admin: per chip the phase, day, today's plan against what was done, the trust breakdown."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, IntegerField, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.translation import gettext_lazy as _

from chips.admin import NoDeleteMixin, PhoneSearchMixin, ReadOnlyAdmin
from chips.models import Chip
from instances import hours
from warmer.models import ChipDailyMetrics, PhasePlan, TrustBreakdown, WarmingAction, WarmingChip
from warmer.trust import COMPONENTS


@admin.register(PhasePlan)
class PhasePlanAdmin(NoDeleteMixin, admin.ModelAdmin):
    list_display = ["phase", "order", "starts_on_day", "min_trust", "messages_per_day", "new_peers_per_day",
                    "reply_ratio"]
    list_editable = ["starts_on_day", "min_trust", "messages_per_day", "new_peers_per_day", "reply_ratio"]
    ordering = ["order"]

    def has_add_permission(self, request) -> bool:
        return False


class DailyMetricsInline(admin.TabularInline):
    model = ChipDailyMetrics
    fk_name = "chip"
    extra = 0
    can_delete = False
    ordering = ["-day"]
    fields = ["day", "sent", "replies_sent", "received", "send_failures", "delivery_failures", "new_peers"]
    readonly_fields = fields
    max_num = 0


def _today_count(status_filter: Q) -> Subquery:
    return Subquery(
        WarmingAction.objects.filter(status_filter, chip=OuterRef("pk"), day=OuterRef("_today"))
        .values("chip").annotate(n=Count("pk")).values("n"),
        output_field=IntegerField(),
    )


@admin.register(WarmingChip)
class WarmingChipAdmin(NoDeleteMixin, PhoneSearchMixin, admin.ModelAdmin):
    """The warming page (Operators and Viewers see it: warmer migration 0005); read-only, the warmer writes it."""

    list_display = ["id", "phone", "status", "warming_phase", "warming_day", "planned_today", "sent_today",
                    "trust_score", "trust_level", "is_connected"]
    list_filter = ["status", "warming_phase", "trust_level"]
    search_fields = ["phone", "instance_name"]
    phone_search_fields = ("phone",)
    list_select_related = ["trust_breakdown"]
    show_full_result_count = False
    inlines = [DailyMetricsInline]
    fields = ["phone", "status", "warming_phase", "warming_started_at", "trust_score", "trust_level",
              "breakdown", "is_connected"]
    readonly_fields = fields

    def get_queryset(self, request):
        today = hours.business_day(timezone.now())
        return (
            super().get_queryset(request)
            .filter(status__in=[Chip.Status.WARMING, Chip.Status.READY, Chip.Status.DEGRADED])
            .annotate(_today=Value(today))
            .annotate(
                _planned=Coalesce(_today_count(Q()), 0),
                _sent=Coalesce(_today_count(Q(status=WarmingAction.Status.SENT)), 0),
            )
        )

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description=_("warming day"))
    def warming_day(self, chip: Chip) -> int:
        return chip.warming_days

    @admin.display(description=_("planned today"))
    def planned_today(self, chip) -> int:
        return chip._planned

    @admin.display(description=_("sent today"))
    def sent_today(self, chip) -> int:
        return chip._sent

    @admin.display(description=_("trust breakdown"))
    def breakdown(self, chip: Chip) -> str:
        try:
            b = chip.trust_breakdown
        except TrustBreakdown.DoesNotExist:
            return str(_("not computed yet"))
        return components_html(b)


@admin.register(WarmingAction)
class WarmingActionAdmin(ReadOnlyAdmin):
    list_display = ["due_at", "chip", "peer", "kind", "status", "text", "note"]
    list_filter = ["status", "kind", "day"]
    list_select_related = ["chip", "peer"]
    raw_id_fields = ["chip", "peer", "reply_to"]
    date_hierarchy = "due_at"
    show_full_result_count = False


def components_html(breakdown: TrustBreakdown) -> str:
    """The trust components by name, each with the most it can weigh (the stored JSON keys are codes)."""
    rows = ((COMPONENTS.get(key, (key, None))[0], value, COMPONENTS.get(key, (key, ""))[1] or "")
            for key, value in breakdown.components.items())
    return format_html_join("", "<div>{}: {} <small>/ {}</small></div>", rows)


@admin.register(TrustBreakdown)
class TrustBreakdownAdmin(ReadOnlyAdmin):
    list_display = ["chip", "score", "components_by_name", "computed_at"]
    list_select_related = ["chip"]
    raw_id_fields = ["chip"]
    rendered_fields = {"components": "components_by_name"}

    @admin.display(description=_("components"))
    def components_by_name(self, breakdown: TrustBreakdown) -> str:
        return components_html(breakdown)
