"""Operators' screens for instances, bindings, outbound messages and the kill switch."""

from __future__ import annotations

import segno
from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from chips.admin import NoDeleteMixin, PhoneSearchMixin, ReadOnlyAdmin, SuperuserDeleteMixin
from common.csv_export import csv_export_action
from common.exceptions import DomainError
from common.texts import translated_phrase
from instances import services
from instances.caps import Caps, Usage, caps_annotations, caps_in_effect, usage_annotations
from instances.models import (
    ChipCapacity,
    ContactBinding,
    ContactSuppression,
    DeliveryEvent,
    GatewayServer,
    InboundMessage,
    Instance,
    OptOutRule,
    OutboundMessage,
    RoutingPolicy,
    SendingSwitch,
)


def qr_preview_html(instance: Instance) -> str:
    """The session's live QR code as an image (to scan from the admin), or why there is none."""
    if instance.state == Instance.State.OPEN:
        return _("linked")
    if not instance.qr_is_live():
        # A QR lives 45 s and only while the session is linking: an old one is dead (field notes §6).
        return _("no live QR code (the last one expired); ask for a new link")
    src = instance.qr_image if instance.qr_image.startswith("data:image") else ""
    if not src and instance.qr_code:
        src = segno.make(instance.qr_code, error="m").png_data_uri(scale=4)
    if not src:
        return _("no QR code received yet")
    return format_html('<img src="{}" alt="QR" style="width:240px;height:240px">', src)


@admin.register(Instance)
class InstanceAdmin(NoDeleteMixin, PhoneSearchMixin, admin.ModelAdmin):
    """The chips' gateway sessions, as last seen: read-only (the checks and webhooks write them); operators may ask
    for the webhook configuration to be checked and repaired."""

    list_display = ["name", "chip", "server", "state", "state_changed_at", "last_disconnect_code",
                    "last_disconnect_at"]
    list_filter = ["state", "server", "last_disconnect_code"]
    list_select_related = ["chip", "server"]
    search_fields = ["name", "chip__phone"]
    phone_search_fields = ("chip__phone",)
    raw_id_fields = ["chip"]
    readonly_fields = ["chip", "name", "server", "state", "state_changed_at", "qr_preview", "qr_updated_at",
                       "last_disconnect_code", "last_disconnect_at", "created_at", "updated_at"]
    fields = readonly_fields
    show_full_result_count = False
    actions = ["heal_webhooks"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_heal_permission(self, request) -> bool:
        return request.user.has_perm("instances.change_instance")

    @admin.action(description=_("Check and repair the webhook configuration"), permissions=["heal"])
    def heal_webhooks(self, request: HttpRequest, queryset) -> None:
        from instances.maintenance import webhooks_heal

        result = webhooks_heal(names=list(queryset.values_list("name", flat=True)))
        self.message_user(request, _("%(checked)d checked, %(healed)d repaired, %(failed)d could not be read.")
                          % {"checked": result.checked, "healed": len(result.healed), "failed": len(result.failed)},
                          messages.WARNING if result.failed else messages.SUCCESS)

    @admin.display(description=_("QR code"))
    def qr_preview(self, instance: Instance) -> str:
        return qr_preview_html(instance)


def _caps_text(caps: Caps, usage: Usage | None = None) -> str:
    if usage is None:
        return _("%(hour)d / h, %(day)d / day, %(new)d new contacts / 24 h") % {
            "hour": caps.per_hour, "day": caps.per_day, "new": caps.new_contacts_per_day}
    return _("%(used_hour)d of %(hour)d this hour, %(used_day)d of %(day)d today") % {
        "used_hour": usage.hour, "hour": caps.per_hour, "used_day": usage.day, "day": caps.per_day}


@admin.register(ContactBinding)
class ContactBindingAdmin(PhoneSearchMixin, ReadOnlyAdmin):
    list_display = ["contact", "chip", "origin", "previous_chip", "move_reason_text", "last_used_at", "expires_at",
                    "released_at"]
    list_filter = [("released_at", admin.EmptyFieldListFilter), "origin"]
    list_select_related = ["chip", "previous_chip"]
    search_fields = ["contact", "chip__phone"]
    phone_search_fields = ("contact", "chip__phone")
    raw_id_fields = ["chip", "previous_chip"]
    show_full_result_count = False
    rendered_fields = {"move_reason": "move_reason_text"}

    @admin.display(description=_("move reason"), ordering="move_reason")
    def move_reason_text(self, binding: ContactBinding) -> str:
        return translated_phrase(binding.move_reason)


@admin.register(OutboundMessage)
class OutboundMessageAdmin(PhoneSearchMixin, ReadOnlyAdmin):
    list_display = ["created_at", "contact", "chip", "status", "evolution_message_id", "error"]
    list_filter = ["status"]
    list_select_related = ["chip"]
    search_fields = ["contact", "idempotency_key", "evolution_message_id"]
    phone_search_fields = ("contact", "chip__phone")
    raw_id_fields = ["chip"]
    show_full_result_count = False
    date_hierarchy = "created_at"
    # The text is left out of the export: it is the company's conversation, and the page shows it one by one.
    actions = [csv_export_action([
        (_("created at"), lambda m: m.created_at),
        (_("idempotency key"), lambda m: m.idempotency_key),
        (_("contact"), lambda m: m.contact),
        (_("chip"), lambda m: m.chip),
        (_("status"), lambda m: m.get_status_display()),
        (_("gateway message id"), lambda m: m.evolution_message_id),
        (_("error"), lambda m: m.error),
        (_("sent at"), lambda m: m.sent_at),
        (_("delivered at"), lambda m: m.delivered_at),
        (_("read at"), lambda m: m.read_at),
    ], basename="outbound-messages")]


@admin.register(ChipCapacity)
class ChipCapacityAdmin(NoDeleteMixin, PhoneSearchMixin, admin.ModelAdmin):
    """Usage against the caps in effect (instances.caps, in SQL: one query per page), and the operator's
    overrides, which apply while the chip is in production."""

    list_display = ["chip", "chip_status", "hour_usage", "day_usage", "new_contacts_cap", "max_per_hour",
                    "max_per_day", "max_new_contacts_per_day", "priority", "restricted_until"]
    list_select_related = ["chip"]
    list_editable = ["max_per_hour", "max_per_day", "max_new_contacts_per_day", "priority"]
    list_filter = ["chip__status"]
    search_fields = ["chip__phone"]
    phone_search_fields = ("chip__phone",)
    raw_id_fields = ["chip"]
    readonly_fields = ["chip", "caps_in_effect", "hour_window", "hour_count", "day_window", "day_count",
                       "last_routed_at", "restricted_until"]
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False  # one row per chip (its primary key), written by the pool when the chip is provisioned

    def save_model(self, request, obj, form, change) -> None:
        """Only what the operator changed: the row's counters were read a moment ago, and a reservation made since
        would be written back over (a lost update) by a save of every field."""
        if change and form.changed_data:
            obj.save(update_fields=[*form.changed_data, "updated_at"])
        elif not change:
            super().save_model(request, obj, form, change)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            **caps_annotations(chip_path="chip__", capacity_path=""),
            **usage_annotations(timezone.now(), capacity_path=""),
        )

    @admin.display(description=_("status"), ordering="chip__status")
    def chip_status(self, capacity: ChipCapacity) -> str:
        return capacity.chip.get_status_display()

    @admin.display(description=_("this hour"), ordering="used_hour")
    def hour_usage(self, capacity) -> str:
        return f"{capacity.used_hour} / {capacity.cap_per_hour}"

    @admin.display(description=_("today"), ordering="used_day")
    def day_usage(self, capacity) -> str:
        return f"{capacity.used_day} / {capacity.cap_per_day}"

    @admin.display(description=_("new contacts / 24 h (cap)"))
    def new_contacts_cap(self, capacity) -> int:
        return capacity.cap_new_contacts_per_day

    @admin.display(description=_("caps in effect"))
    def caps_in_effect(self, capacity: ChipCapacity) -> str:
        return _caps_text(caps_in_effect(capacity.chip, capacity)) if capacity.pk else "-"


@admin.register(DeliveryEvent)
class DeliveryEventAdmin(PhoneSearchMixin, ReadOnlyAdmin):
    list_display = ["occurred_at", "chip", "kind", "message_id", "detail"]
    list_filter = ["kind"]
    search_fields = ["message_id", "chip__phone", "remote"]
    phone_search_fields = ("chip__phone", "remote")
    list_select_related = ["chip"]
    raw_id_fields = ["chip"]
    show_full_result_count = False


class PauseForm(forms.Form):
    reason = forms.CharField(label=_("reason"), max_length=300,
                             help_text=_("Every route and send is refused until someone resumes; the reason is kept "
                                         "in the history of pauses."),
                             error_messages={"required": _("Give a reason to pause sending.")})


@admin.register(RoutingPolicy)
class RoutingPolicyAdmin(NoDeleteMixin, admin.ModelAdmin):
    """The routing strategy and the kill switch. The switch is flipped by the actions (pause asks for a reason),
    never by editing its fields; its history is the list of pauses below."""

    list_display = ["__str__", "strategy", "paused_reason", "paused_by", "paused_at", "binding_ttl_days"]
    fields = ["strategy", "binding_ttl_days", "is_paused", "paused_reason", "paused_by", "paused_at", "history"]
    readonly_fields = ["is_paused", "paused_reason", "paused_by", "paused_at", "history"]
    actions = ["pause_sending", "resume_sending"]

    def has_add_permission(self, request) -> bool:
        return not RoutingPolicy.objects.exists()

    def has_switch_permission(self, request) -> bool:
        return request.user.has_perm("instances.change_routingpolicy")

    def get_queryset(self, request):
        RoutingPolicy.load()  # the single row always exists once someone looks
        return super().get_queryset(request)

    @admin.display(description=_("pauses (history)"))
    def history(self, policy: RoutingPolicy) -> str:
        switches = list(SendingSwitch.objects.all()[:20])
        if not switches:
            return _("Never paused.")
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", (
            (formats.localize(timezone.localtime(s.paused_at)), s.paused_by, s.reason,
             formats.localize(timezone.localtime(s.resumed_at)) if s.resumed_at else _("in force"), s.resumed_by)
            for s in switches))
        head = format_html("<tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>", _("paused at"),
                           _("paused by"), _("reason"), _("resumed at"), _("resumed by"))
        return format_html('<table id="sending-switches">{}{}</table>', head, rows)

    @admin.action(description=_("Pause all sending (kill switch)…"), permissions=["switch"])
    def pause_sending(self, request: HttpRequest, queryset):
        form = PauseForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            try:
                services.sending_pause(reason=form.cleaned_data["reason"], by=request.user.get_username())
            except DomainError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                return None
            self.message_user(request, _("Sending is paused."), messages.WARNING)
            return None
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "form": form,
                   "objects": queryset, "action": "pause_sending",
                   "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME, "title": _("Pause all sending")}
        return TemplateResponse(request, "admin/instances/routingpolicy/pause.html", context)

    @admin.action(description=_("Resume sending"), permissions=["switch"])
    def resume_sending(self, request: HttpRequest, queryset) -> None:
        services.sending_resume(by=request.user.get_username())
        self.message_user(request, _("Sending resumed."), messages.SUCCESS)


@admin.register(SendingSwitch)
class SendingSwitchAdmin(ReadOnlyAdmin):
    list_display = ["paused_at", "paused_by", "reason", "resumed_at", "resumed_by"]
    search_fields = ["reason", "paused_by", "resumed_by"]
    date_hierarchy = "paused_at"


class GatewayServerForm(forms.ModelForm):
    base_url = forms.URLField(label=_("base URL"), required=False, assume_scheme="https",
                              help_text=_("Empty: EVOLUTION_API_URL."))

    class Meta:
        model = GatewayServer
        fields = ["name", "base_url", "api_key", "capacity", "is_enabled"]
        # The key is never shown back: typing a new one replaces it, leaving it empty keeps the stored one.
        widgets = {"api_key": forms.PasswordInput(render_value=False)}

    def clean_api_key(self) -> str:
        return self.cleaned_data.get("api_key") or (self.instance.api_key if self.instance.pk else "")


@admin.register(GatewayServer)
class GatewayServerAdmin(SuperuserDeleteMixin, admin.ModelAdmin):
    form = GatewayServerForm
    list_display = ["name", "url_shown", "capacity", "load", "is_enabled", "is_reachable", "unreachable_since"]
    list_filter = ["is_enabled", "is_reachable"]
    readonly_fields = ["is_reachable", "unreachable_since", "created_at", "updated_at"]

    def get_queryset(self, request):
        return super().get_queryset(request).with_load()

    def has_delete_permission(self, request, obj=None) -> bool:
        # Superusers only, and a server holding sessions cannot go (instances point at it); an empty one may.
        return super().has_delete_permission(request, obj) and (obj is None or not obj.instances.exists())

    @admin.display(description=_("base URL"))
    def url_shown(self, server: GatewayServer) -> str:
        return server.url

    @admin.display(description=_("sessions"), ordering="load")
    def load(self, server: GatewayServer) -> int:
        return server.load


# --- contacts: what they wrote, who opted out, the operators' opt-out rules (W2 4/7) ------------------------------

@admin.register(InboundMessage)
class InboundMessageAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "contact", "contact_lid", "chip", "binding", "short_text", "media"]
    list_filter = ["binding", "media"]
    list_select_related = ["chip"]
    search_fields = ["contact", "contact_lid", "gateway_message_id", "text"]
    raw_id_fields = ["chip"]
    date_hierarchy = "received_at"
    show_full_result_count = False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description=_("text"))
    def short_text(self, message: InboundMessage) -> str:
        return message.text if len(message.text) <= 80 else message.text[:77] + "…"


class SuppressionForm(forms.ModelForm):
    class Meta:
        model = ContactSuppression
        fields = ["contact", "reason"]

    def clean_contact(self) -> str:
        from instances.phones import normalize_contact

        try:
            return normalize_contact(self.cleaned_data["contact"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


@admin.register(ContactSuppression)
class ContactSuppressionAdmin(admin.ModelAdmin):
    """The pool-wide opt-out list: who, why, when, and the message that triggered it. Operators add one by hand
    and lift one with the action; rows are never edited nor deleted (the history stays)."""

    form = SuppressionForm
    list_display = ["contact", "is_active", "source", "rule", "reason", "created_by", "created_at", "trigger_text",
                    "lifted_at", "lifted_by"]
    list_filter = ["source", ("lifted_at", admin.EmptyFieldListFilter)]
    search_fields = ["contact", "reason", "rule"]
    raw_id_fields = ["trigger"]
    actions = ["lift"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in ContactSuppression._meta.fields] if obj else []

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change) -> None:
        if change:
            return
        from instances.optouts import suppression_add

        row, _created = suppression_add(contact=form.cleaned_data["contact"], source=ContactSuppression.Source.ADMIN,
                                        by=request.user.get_username(), reason=form.cleaned_data.get("reason", ""))
        obj.pk = row.pk

    @admin.display(description=_("active"), boolean=True)
    def is_active(self, row: ContactSuppression) -> bool:
        return row.lifted_at is None

    @admin.display(description=_("message"))
    def trigger_text(self, row: ContactSuppression) -> str:
        return row.trigger.text[:80] if row.trigger_id else ""

    @admin.action(description=_("Lift the opt-out (the contact may be contacted again)"), permissions=["change"])
    def lift(self, request: HttpRequest, queryset) -> None:
        from instances.optouts import suppression_lift

        lifted = sum(suppression_lift(contact=c, by=request.user.get_username())
                     for c in queryset.filter(lifted_at__isnull=True).values_list("contact", flat=True))
        self.message_user(request, _("%(n)d opt-out(s) lifted.") % {"n": lifted}, messages.SUCCESS)


@admin.register(OptOutRule)
class OptOutRuleAdmin(admin.ModelAdmin):
    """Keywords and phrases operators add to the opt-out classifier (instances/optout.py)."""

    list_display = ["kind", "text", "is_enabled", "created_by", "created_at"]
    list_filter = ["kind", "is_enabled"]
    fields = ["kind", "text", "is_enabled"]

    def save_model(self, request, obj, form, change) -> None:
        if not change:
            obj.created_by = request.user.get_username()
        super().save_model(request, obj, form, change)
