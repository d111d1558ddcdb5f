"""Operators' screens for consumer webhooks: endpoints (the secret shown once), events, deliveries, replays."""

from __future__ import annotations

import json
from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from common.exceptions import DomainError
from outbox import selectors, services
from outbox.models import ALL_EVENTS, EVENT_TYPES, Delivery, DeliveryAttempt, Endpoint, Event
from outbox.targets import TargetRefused, url_check

STATUS_COLOURS = {Delivery.Status.PENDING: "#0d6efd", Delivery.Status.DELIVERED: "#198754",
                  Delivery.Status.FAILED: "#dc3545"}


class SystemRecordAdmin(admin.ModelAdmin):
    """Records the system writes (events, deliveries, attempts): operators look and replay, nobody edits them."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_replay_permission(self, request) -> bool:
        return request.user.has_perm("outbox.replay_delivery")


class EventTypeFilter(admin.SimpleListFilter):
    """The known types (not a DISTINCT over a table that only grows)."""

    title = _("event type")
    parameter_name = "type"
    field = "type"

    def lookups(self, request, model_admin):
        return [(t, t) for t in EVENT_TYPES]

    def queryset(self, request, queryset):
        return queryset.filter(**{self.field: self.value()}) if self.value() else queryset


class DeliveryEventTypeFilter(EventTypeFilter):
    parameter_name = "event_type"
    field = "event__type"


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def _count_of(status: str) -> Coalesce:
    """An endpoint's deliveries in one status, as a subquery (no join multiplying the changelist's rows)."""
    counted = (Delivery.objects.filter(endpoint=OuterRef("pk"), status=status).order_by()
               .values("endpoint").annotate(n=Count("pk")).values("n"))
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def _attempts_table(attempts: list[DeliveryAttempt]) -> str:
    if not attempts:
        return _("No attempt yet.")
    rows = format_html_join(
        "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ms</td><td>{}</td></tr>",
        ((timezone.localtime(a.attempted_at).strftime("%Y-%m-%d %H:%M:%S"), a.delivery.event.type,
          a.delivery.event.event_id, format_html('<b style="color:{}">{}</b>', "#198754" if a.is_success
                                                 else "#dc3545", a.outcome), a.duration_ms, a.response_excerpt[:120])
         for a in attempts))
    head = format_html("<tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
                       _("attempted at"), _("type"), _("event id"), _("outcome"), _("duration"), _("response (start)"))
    return format_html('<table class="outbox-attempts">{}{}</table>', head, rows)


class EndpointForm(forms.ModelForm):
    event_types = forms.MultipleChoiceField(
        label=_("event types"), required=False, widget=forms.CheckboxSelectMultiple,
        choices=[(ALL_EVENTS, _("All event types")),
                 *((t, format_lazy("{} — {}", t, label)) for t, label in EVENT_TYPES.items())],
        help_text=_("None ticked, or all event types: every event."))

    class Meta:
        model = Endpoint
        fields = ["url", "event_types", "description", "is_enabled"]

    def clean_url(self) -> str:
        try:
            return url_check(self.cleaned_data["url"].strip())
        except TargetRefused as exc:
            raise ValidationError(exc.message) from None

    def clean_event_types(self) -> list[str]:
        try:
            return services.event_types_clean(self.cleaned_data["event_types"])
        except DomainError as exc:
            raise ValidationError(exc.message) from None


class ReplaySinceForm(forms.Form):
    since = forms.DateTimeField(label=_("Failed deliveries created since (São Paulo time, YYYY-MM-DD HH:MM)"))


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    form = EndpointForm
    list_display = ["url", "types", "is_enabled", "last_delivery_status", "failed_deliveries",
                    "pending_deliveries", "created_at"]
    list_filter = ["is_enabled"]
    search_fields = ["url", "description"]
    actions = ["replay_failed_since"]
    readonly_fields = ["disabled_reason", "disabled_at", "created_at", "updated_at", "recent_attempts"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Endpoint]:
        latest = DeliveryAttempt.objects.filter(endpoint=OuterRef("pk")).order_by("-attempted_at", "-pk")
        return super().get_queryset(request).annotate(
            last_code=Subquery(latest.values("status_code")[:1]),
            last_error=Subquery(latest.values("error")[:1]),
            last_at=Subquery(latest.values("attempted_at")[:1]),
            failed_count=_count_of(Delivery.Status.FAILED),
            pending_count=_count_of(Delivery.Status.PENDING),
        )

    def has_delete_permission(self, request, obj=None) -> bool:
        # Operators disable an endpoint (is_enabled); deleting one, and with it its deliveries' record, is for
        # superusers (or DELETE /api/v1/endpoints/{id}).
        return request.user.is_superuser and super().has_delete_permission(request, obj)

    def get_fields(self, request, obj=None):
        fields = ["url", "event_types", "description", "is_enabled"]
        return fields if obj is None else [*fields, *self.readonly_fields]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    @admin.display(description=_("event types"))
    def types(self, endpoint: Endpoint) -> str:
        return ", ".join(endpoint.event_types) if endpoint.event_types else ALL_EVENTS

    @admin.display(description=_("last delivery"), ordering="last_at")
    def last_delivery_status(self, endpoint: Endpoint) -> str:
        if endpoint.last_at is None:
            return "—"
        outcome = str(endpoint.last_code) if endpoint.last_code is not None else endpoint.last_error[:60]
        ok = endpoint.last_code is not None and 200 <= endpoint.last_code < 300
        return format_html('<span style="color:{}">{}</span> <small>{}</small>', "#198754" if ok else "#dc3545",
                           outcome, timezone.localtime(endpoint.last_at).strftime("%Y-%m-%d %H:%M"))

    @admin.display(description=_("failures"), ordering="failed_count")
    def failed_deliveries(self, endpoint: Endpoint) -> int:
        return endpoint.failed_count

    @admin.display(description=_("pending"), ordering="pending_count")
    def pending_deliveries(self, endpoint: Endpoint) -> int:
        return endpoint.pending_count

    @admin.display(description=_("recent attempts"))
    def recent_attempts(self, endpoint: Endpoint) -> str:
        return _attempts_table(selectors.endpoint_recent_attempts(endpoint=endpoint))

    def save_model(self, request: HttpRequest, obj: Endpoint, form: EndpointForm, change: bool) -> None:
        data = form.cleaned_data
        if change:
            saved = services.endpoint_update(endpoint=obj.pk, url=data["url"], event_types=data["event_types"],
                                             description=data["description"], is_enabled=data["is_enabled"],
                                             actor=_("operator %(user)s") % {"user": request.user.get_username()})
        else:
            saved = services.endpoint_create(url=data["url"], event_types=data["event_types"],
                                             description=data["description"], is_enabled=data["is_enabled"])
        for field in Endpoint._meta.concrete_fields:
            setattr(obj, field.attname, getattr(saved, field.attname))

    def delete_model(self, request: HttpRequest, obj: Endpoint) -> None:
        services.endpoint_delete(endpoint=obj.pk)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        for pk in queryset.values_list("pk", flat=True):
            services.endpoint_delete(endpoint=pk)

    def response_add(self, request: HttpRequest, obj: Endpoint, post_url_continue=None) -> HttpResponse:
        # The only time the secret is shown: this page is the answer to the POST, nothing stores it elsewhere.
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "endpoint": obj,
                   "title": _("Endpoint added: copy its signing secret"),
                   "change_url": reverse("admin:outbox_endpoint_change", args=[obj.pk]),
                   "add_url": reverse("admin:outbox_endpoint_add")}
        return TemplateResponse(request, "admin/outbox/endpoint/secret.html", context)

    def has_replay_permission(self, request) -> bool:
        return request.user.has_perm("outbox.replay_delivery")

    @admin.action(description=_("Replay failed deliveries since a time…"), permissions=["replay"])
    def replay_failed_since(self, request: HttpRequest, queryset: QuerySet[Endpoint]):
        form = ReplaySinceForm(request.POST if "apply" in request.POST else None,
                               initial={"since": timezone.localtime(timezone.now() - timedelta(days=1))
                                        .strftime("%Y-%m-%d %H:%M")})
        if form.is_bound and form.is_valid():
            queued, skipped = 0, []
            for endpoint in queryset:
                try:
                    queued += services.deliveries_replay_failed(endpoint=endpoint, since=form.cleaned_data["since"])
                except DomainError as exc:
                    skipped.append(exc.message)
            self.message_user(request, ngettext("%(count)d failed delivery queued again.",
                                                "%(count)d failed deliveries queued again.", queued)
                              % {"count": queued}, messages.SUCCESS)
            for reason in skipped:
                self.message_user(request, reason, messages.WARNING)
            return None
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "form": form,
                   "endpoints": queryset, "action": "replay_failed_since",
                   "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                   "title": _("Replay failed deliveries since a time")}
        return TemplateResponse(request, "admin/outbox/endpoint/replay_failed.html", context)


class DeliveryInline(ReadOnlyInline):
    model = Delivery
    fields = ["endpoint", "status", "attempts", "last_status_code", "last_error", "next_attempt_at", "delivered_at"]
    readonly_fields = fields
    verbose_name_plural = _("deliveries")


@admin.register(Event)
class EventAdmin(SystemRecordAdmin):
    list_display = ["event_id", "type", "occurred_at", "delivered", "failed", "created_at"]
    list_filter = [EventTypeFilter]
    search_fields = ["=event_id"]
    show_full_result_count = False
    fields = ["event_id", "type", "occurred_at", "created_at", "payload"]
    readonly_fields = fields
    inlines = [DeliveryInline]
    actions = ["replay_to_subscribed"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Event]:
        def count(status: str) -> Coalesce:
            counted = (Delivery.objects.filter(event=OuterRef("pk"), status=status).order_by()
                       .values("event").annotate(n=Count("pk")).values("n"))
            return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))

        return super().get_queryset(request).annotate(delivered_count=count(Delivery.Status.DELIVERED),
                                                      failed_count=count(Delivery.Status.FAILED))

    @admin.display(description=_("delivered"))
    def delivered(self, event: Event) -> int:
        return event.delivered_count

    @admin.display(description=_("failed"))
    def failed(self, event: Event) -> int:
        return event.failed_count

    @admin.display(description=_("payload"))
    def payload(self, event: Event) -> str:
        return format_html("<pre>{}</pre>", json.dumps(event.as_payload(), indent=2, ensure_ascii=False))

    @admin.action(description=_("Replay to every subscribed endpoint"), permissions=["replay"])
    def replay_to_subscribed(self, request: HttpRequest, queryset: QuerySet[Event]) -> None:
        queued = sum(services.event_replay(event=pk) for pk in queryset.values_list("pk", flat=True))
        self.message_user(request, ngettext("%(count)d delivery queued again (same webhook-id).",
                                            "%(count)d deliveries queued again (same webhook-id).", queued)
                          % {"count": queued}, messages.SUCCESS)


class DeliveryAttemptInline(ReadOnlyInline):
    model = DeliveryAttempt
    fk_name = "delivery"
    fields = ["attempted_at", "status_code", "error", "duration_ms", "response_excerpt"]
    readonly_fields = fields
    ordering = ["-attempted_at", "-id"]
    verbose_name_plural = _("attempts")


@admin.register(Delivery)
class DeliveryAdmin(SystemRecordAdmin):
    list_display = ["event_link", "event_type", "endpoint", "status_badge", "attempts", "last_status_code",
                    "next_attempt_at", "created_at"]
    list_filter = ["status", DeliveryEventTypeFilter, "endpoint"]
    list_select_related = ["event", "endpoint"]
    search_fields = ["=event__event_id"]
    show_full_result_count = False
    fields = ["event_link", "endpoint", "status_badge", "attempts", "next_attempt_at", "last_attempt_at",
              "last_status_code", "last_error", "delivered_at", "created_at"]
    readonly_fields = fields
    inlines = [DeliveryAttemptInline]
    actions = ["replay"]

    @admin.display(description=_("event"), ordering="event__created_at")
    def event_link(self, delivery: Delivery) -> str:
        return format_html('<a href="{}">{}</a>', reverse("admin:outbox_event_change", args=[delivery.event_id]),
                           delivery.event.event_id)

    @admin.display(description=_("type"), ordering="event__type")
    def event_type(self, delivery: Delivery) -> str:
        return delivery.event.type

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, delivery: Delivery) -> str:
        return format_html('<span style="color:#fff;background:{};padding:2px 8px;border-radius:8px">{}</span>',
                           STATUS_COLOURS.get(delivery.status, "#6c757d"), delivery.get_status_display())

    @admin.action(description=_("Replay"), permissions=["replay"])
    def replay(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        queued = skipped = 0
        for pk in queryset.values_list("pk", flat=True):
            if services.delivery_replay(delivery=pk):
                queued += 1
            else:
                skipped += 1
        self.message_user(request, ngettext("%(count)d delivery queued again (same webhook-id).",
                                            "%(count)d deliveries queued again (same webhook-id).", queued)
                          % {"count": queued}, messages.SUCCESS)
        if skipped:
            self.message_user(request, ngettext("%(count)d skipped: its endpoint is disabled.",
                                                "%(count)d skipped: their endpoint is disabled.", skipped)
                              % {"count": skipped}, messages.WARNING)
