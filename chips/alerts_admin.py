"""Operators' screens for the alerts, the chips' history and the Slack notifications (chips.admin's rules)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from chips import services
from chips.admin import (
    SEVERITY_COLOURS,
    NoDeleteMixin,
    PhoneSearchMixin,
    ReadOnlyAdmin,
    RenderedTextsMixin,
    actor_text,
    badge,
    short_time,
)
from chips.alerts import KIND_LABELS
from chips.models import Chip, ChipAlert, ChipTransition, Notification
from common.csv_export import csv_export_action


class TransitionFilter(admin.SimpleListFilter):
    """The history by transition, named in the operators' words (the stored value is the method's name)."""

    title = gettext_lazy("transition")
    parameter_name = "transition"

    def lookups(self, request, model_admin):
        return [(name, Chip.transition_label(name)) for name in sorted(services.TRANSITIONS)]

    def queryset(self, request, queryset):
        return queryset.filter(transition=self.value()) if self.value() else queryset


class AlertKindFilter(admin.SimpleListFilter):
    title = gettext_lazy("kind")
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        return sorted(KIND_LABELS.items(), key=lambda item: str(item[1]))

    def queryset(self, request, queryset):
        return queryset.filter(kind=self.value()) if self.value() else queryset


class AlertStateFilter(admin.SimpleListFilter):
    title = gettext_lazy("state")
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("open", _("Open")), ("acknowledged", _("Acknowledged"))]

    def queryset(self, request, queryset):
        if self.value() == "open":
            return queryset.filter(acknowledged_at__isnull=True)
        if self.value() == "acknowledged":
            return queryset.filter(acknowledged_at__isnull=False)
        return queryset


@admin.register(ChipAlert)
class ChipAlertAdmin(RenderedTextsMixin, NoDeleteMixin, PhoneSearchMixin, admin.ModelAdmin):
    rendered_fields = {"kind": "kind_label"}
    list_display = ["raised", "severity_badge", "chip", "short_message", "acknowledgement"]
    list_filter = [AlertStateFilter, "severity", AlertKindFilter]
    list_select_related = ["chip", "acknowledged_by"]
    search_fields = ["message", "kind", "chip__phone", "dedup_key"]
    phone_search_fields = ("chip__phone",)
    raw_id_fields = ["chip"]
    fields = ["chip", "severity", "kind", "message", "action_taken", "dedup_key", "occurrences", "last_raised_at",
              "acknowledged_by", "acknowledged_at", "created_at", "updated_at"]
    readonly_fields = fields
    show_full_result_count = False
    actions = [
        "acknowledge",
        csv_export_action([
            (gettext_lazy("last raised at"), lambda a: a.last_raised_at),
            (gettext_lazy("severity"), lambda a: a.get_severity_display()),
            (gettext_lazy("kind"), lambda a: a.kind_label()),
            (gettext_lazy("chip"), lambda a: a.chip),
            (gettext_lazy("message"), lambda a: a.message_text),
            (gettext_lazy("action taken"), lambda a: a.action_taken_text),
            (gettext_lazy("occurrences"), lambda a: a.occurrences),
            (gettext_lazy("acknowledged at"), lambda a: a.acknowledged_at),
            (gettext_lazy("acknowledged by"), lambda a: a.acknowledged_by),
        ], basename="alerts"),
    ]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # raised by the system; the only act on an alert is acknowledging it

    def has_acknowledge_permission(self, request) -> bool:
        return request.user.has_perm("chips.change_chipalert")

    @admin.display(description=gettext_lazy("last raised at"), ordering="last_raised_at")
    def raised(self, alert: ChipAlert) -> str:
        if alert.occurrences > 1:
            return format_html("{}<br><small>×{}</small>", short_time(alert.last_raised_at), alert.occurrences)
        return short_time(alert.last_raised_at)

    @admin.display(description=gettext_lazy("severity"), ordering="severity")
    def severity_badge(self, alert: ChipAlert) -> str:
        return badge(alert.get_severity_display(), SEVERITY_COLOURS.get(alert.severity, "#6c757d"))

    @admin.display(description=gettext_lazy("message"))
    def short_message(self, alert: ChipAlert) -> str:
        message = alert.message_text
        text = message if len(message) <= 140 else message[:137] + "…"
        action = format_html("<br><small>→ {}</small>", alert.action_taken_text[:120]) if alert.action_taken else ""
        return format_html('<div style="min-width:18em;white-space:normal"><small><strong>{}</strong></small><br>{}{}'
                           "</div>", alert.kind_label(), text, action)

    @admin.display(description=gettext_lazy("state"), ordering="acknowledged_at")
    def acknowledgement(self, alert: ChipAlert) -> str:
        if alert.acknowledged_at is None:
            return format_html("<strong>{}</strong>", _("open"))
        return actor_text(_("acknowledged"), str(alert.acknowledged_by or ""))

    @admin.action(description=gettext_lazy("Acknowledge selected alerts"), permissions=["acknowledge"])
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[ChipAlert]) -> None:
        count = services.alerts_acknowledge(alert_ids=queryset.values_list("pk", flat=True), user=request.user)
        self.message_user(
            request,
            ngettext("%(count)d alert acknowledged.", "%(count)d alerts acknowledged.", count) % {"count": count},
            messages.SUCCESS,
        )


@admin.register(ChipTransition)
class ChipTransitionAdmin(PhoneSearchMixin, ReadOnlyAdmin):
    list_display = ["created_at", "chip", "source", "target", "transition_label", "actor", "reason_text"]
    list_filter = [TransitionFilter, "target", "actor_kind"]
    list_select_related = ["chip"]
    search_fields = ["chip__phone", "reason", "actor_id"]
    phone_search_fields = ("chip__phone",)
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description=gettext_lazy("transition"), ordering="transition")
    def transition_label(self, row: ChipTransition) -> str:
        return row.transition_label

    @admin.display(description=gettext_lazy("by"), ordering="actor_id")
    def actor(self, row: ChipTransition) -> str:
        return actor_text(row.get_actor_kind_display(), row.actor_id)


class NotificationStateFilter(admin.SimpleListFilter):
    """Slack notifications by what became of them: sent, failed for good, being retried, or waiting."""

    title = gettext_lazy("delivery")
    parameter_name = "delivery"

    def lookups(self, request, model_admin):
        return [("sent", _("Sent")), ("failed", _("Failed")), ("retrying", _("Retrying")),
                ("waiting", _("Waiting for its first try"))]

    def queryset(self, request, queryset):
        pending = Notification.Status.PENDING
        return {
            "sent": lambda: queryset.filter(status=Notification.Status.SENT),
            "failed": lambda: queryset.filter(status=Notification.Status.FAILED),
            "retrying": lambda: queryset.filter(status=pending, attempts__gt=0),
            "waiting": lambda: queryset.filter(status=pending, attempts=0),
        }.get(self.value(), lambda: queryset)()


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    """What was told to the operators on Slack, and whether it got there."""

    list_display = ["created_at", "channel", "delivery", "attempts", "short_text", "last_error", "next_attempt_at",
                    "sent_at"]
    list_filter = [NotificationStateFilter, "channel"]
    search_fields = ["text", "dedup_key"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    fields = ["channel", "delivery", "text", "dedup_key", "attempts", "last_error", "next_attempt_at", "sent_at",
              "created_at", "updated_at"]
    readonly_fields = fields

    @admin.display(description=gettext_lazy("delivery"), ordering="status")
    def delivery(self, row: Notification) -> str:
        if row.status == Notification.Status.SENT:
            return badge(_("Sent"), "#198754")
        if row.status == Notification.Status.FAILED:
            return badge(_("Failed"), "#dc3545")
        if row.attempts:
            return badge(_("Retrying"), "#fd7e14")
        return badge(_("Waiting"), "#6c757d")

    @admin.display(description=gettext_lazy("text"))
    def short_text(self, row: Notification) -> str:
        return row.text if len(row.text) <= 100 else row.text[:97] + "…"
