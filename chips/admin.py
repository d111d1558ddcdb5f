"""Operators' screens for chips, alerts, the chips' history and the Slack notifications.

Rules every screen here follows (and the other apps' admins with them):
- a record the system writes is never edited nor deleted from the admin; a chip leaves the pool by being
  retired, never deleted;
- a page where nothing can be changed offers no Save button;
- an action that changes something asks for a permission the Viewers group does not have.
"""

from __future__ import annotations

import re

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django_fsm.admin import FSMAdminMixin

from chips import services
from chips.models import Chip, ChipAlert, ChipTransition, TrustLevel
from common.csv_export import csv_export_action
from common.exceptions import DomainError
from common.texts import RenderedText, Text

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
SEVERITY_COLOURS = {ChipAlert.Severity.INFO: "#0d6efd", ChipAlert.Severity.WARNING: "#fd7e14",
                    ChipAlert.Severity.CRITICAL: "#dc3545"}
# Transitions that take a chip out of its work, or restart it: the operator says why, and the history keeps it.
REASON_REQUIRED = ("ban", "retire", "rewarm")
# "+55 61 9000-00014", "(61) 90000-0014", "556190000014": a search for a number, in any common format.
PHONE_LIKE = re.compile(r"^\+?[\d\s().\-]{8,}$")


def badge(text: str, colour: str) -> str:
    return format_html('<span style="background:{};color:#fff;padding:2px 8px;border-radius:10px;font-size:11px;'
                       'white-space:nowrap">{}</span>', colour, text)


class NoDeleteMixin:
    """Nobody deletes these rows from the admin (no Delete button, no "Delete selected"), superusers included:
    they are the system's record of what happened."""

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class SuperuserDeleteMixin:
    """Only superusers delete these (operator-owned settings whose deletion harms no record)."""

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser and super().has_delete_permission(request, obj)


class RenderedTextsMixin:
    """Stored texts in the reader's language: a field X shown as the model's X_text (common.texts.RenderedText),
    and the fields in `rendered_fields` as the attribute named there (e.g. a kind as its label)."""

    rendered_fields: dict[str, str] = {}

    def _shown_as(self, name: str) -> str:
        if name in self.rendered_fields:
            return self.rendered_fields[name]
        return f"{name}_text" if isinstance(getattr(self.model, f"{name}_text", None), RenderedText) else name

    def get_fields(self, request, obj=None):
        return list(dict.fromkeys(self._shown_as(f) for f in super().get_fields(request, obj)))

    def get_readonly_fields(self, request, obj=None):
        fields = [self._shown_as(f) for f in super().get_readonly_fields(request, obj)]
        rendered = [self._shown_as(f.name) for f in self.model._meta.fields if self._shown_as(f.name) != f.name]
        return list(dict.fromkeys([*fields, *rendered]))


class ReadOnlyAdmin(RenderedTextsMixin, NoDeleteMixin, admin.ModelAdmin):
    """Records the system writes (history, logs, events): operators look, nobody adds, edits or deletes."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class PhoneSearchMixin:
    """Search that finds a number however it is typed: "+55 61 9000-00014" finds +556190000014.

    Django's search splits the term on spaces and needs every piece to match; a term that looks like a phone
    number is instead reduced to its digits and looked for in `phone_search_fields`.
    """

    phone_search_fields: tuple[str, ...] = ()

    def get_search_results(self, request, queryset, search_term):
        term = (search_term or "").strip()
        if self.phone_search_fields and PHONE_LIKE.match(term):
            digits = re.sub(r"\D", "", term)
            condition = Q()
            for field in self.phone_search_fields:
                condition |= Q(**{f"{field}__contains": digits})
            return queryset.filter(condition), False
        return super().get_search_results(request, queryset, search_term)


def short_time(value) -> str:
    """A list column's time, short (the operators' clock): long localized dates make lists overflow."""
    return formats.date_format(timezone.localtime(value), "SHORT_DATETIME_FORMAT") if value else "—"


def actor_text(kind_label: str, actor_id: str) -> str:
    return f"{kind_label}: {actor_id}" if actor_id else kind_label


class TrustLevelFilter(admin.SimpleListFilter):
    title = gettext_lazy("trust level")
    parameter_name = "trust_level"

    def lookups(self, request, model_admin):
        return TrustLevel.choices

    def queryset(self, request, queryset):
        return queryset.filter(trust_level=self.value()) if self.value() else queryset


class ChipTransitionInline(RenderedTextsMixin, admin.TabularInline):
    model = ChipTransition
    extra = 0
    can_delete = False
    ordering = ["-created_at", "-id"]
    fields = ["created_at", "source", "target", "transition_label", "reason", "actor"]
    readonly_fields = fields
    verbose_name_plural = gettext_lazy("history")

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description=gettext_lazy("transition"))
    def transition_label(self, row: ChipTransition) -> str:
        return row.transition_label

    @admin.display(description=gettext_lazy("by"))
    def actor(self, row: ChipTransition) -> str:
        return actor_text(row.get_actor_kind_display(), row.actor_id)


class OpenAlertInline(RenderedTextsMixin, admin.TabularInline):
    """The chip's open alerts (acknowledged ones stay in the alerts list, filtered by chip)."""

    rendered_fields = {"kind": "kind_label"}
    model = ChipAlert
    extra = 0
    can_delete = False
    fields = ["last_raised_at", "severity", "kind", "message", "action_taken", "occurrences"]
    readonly_fields = fields
    verbose_name_plural = gettext_lazy("open alerts")

    def get_queryset(self, request):
        return super().get_queryset(request).open()

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class TransitionReasonForm(forms.Form):
    reason = forms.CharField(
        label=gettext_lazy("reason"), max_length=500, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=gettext_lazy("Kept in the chip's history with your name."),
        error_messages={"required": gettext_lazy("Say why: the reason is kept in the chip's history.")})


def _report_bulk(modeladmin: admin.ModelAdmin, request: HttpRequest, result: services.BulkResult, label: str) -> None:
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


def _bulk(transition: str):
    """An admin action running one operator transition on every selected chip, reporting each refusal. The
    transitions in REASON_REQUIRED first show a confirmation page that asks for the reason."""
    label = Chip.transition_label(transition)

    def action(modeladmin: ChipAdmin, request: HttpRequest, queryset: QuerySet[Chip]):
        if transition not in REASON_REQUIRED:
            result = services.chips_bulk_transition(
                chip_ids=queryset.values_list("pk", flat=True), transition=transition,
                actor=services.Actor.user(request.user), reason=Text("op.bulk_admin"))
            _report_bulk(modeladmin, request, result, label)
            return None
        form = TransitionReasonForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            result = services.chips_bulk_transition(
                chip_ids=queryset.values_list("pk", flat=True), transition=transition,
                actor=services.Actor.user(request.user), reason=form.cleaned_data["reason"])
            _report_bulk(modeladmin, request, result, label)
            return None
        chips = list(queryset.order_by("pk"))
        context = {**modeladmin.admin_site.each_context(request), "opts": modeladmin.model._meta, "form": form,
                   "chips": chips, "action": f"bulk_{transition}", "transition_label": label,
                   "help_text": Chip.transition_help(transition),
                   "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                   "title": _("%(transition)s: %(count)d chip(s)") % {"transition": label, "count": len(chips)}}
        return TemplateResponse(request, "admin/chips/chip/bulk_transition_confirm.html", context)

    action.__name__ = f"bulk_{transition}"
    return admin.action(description=label, permissions=["run_transitions"])(action)


class ChipAdmin(NoDeleteMixin, PhoneSearchMixin, FSMAdminMixin, admin.ModelAdmin):
    """The chip page. Not registered here: the pool app (chipfarm.admin) registers it with the inlines of the
    apps above chips (instance, capacity, warming metrics), which chips may not know (DESIGN §11).

    Nothing on a chip is typed in by hand, so the page is read-only for everyone (no Save, no Delete: retire is the
    way out). Its transition buttons post to /admin/chips/chip/<id>/transition/<name>/; ban, retire and rewarm go
    through a confirmation page that asks for the reason.
    """

    fsm_fields = ["status"]
    list_display = ["id", "phone", "status_badge", "trust", "warming_phase", "is_connected", "updated"]
    list_display_links = ["id", "phone"]
    list_filter = ["status", TrustLevelFilter, "warming_phase", "is_connected", "source", "area_code"]
    search_fields = ["phone", "instance_name", "provider_line_id"]
    phone_search_fields = ("phone",)
    ordering = ["-id"]
    list_per_page = 50
    show_full_result_count = False
    inlines = [ChipTransitionInline, OpenAlertInline]
    actions = [
        _bulk("promote_to_ready"),
        _bulk("promote_to_active"),
        _bulk("rewarm"),
        _bulk("ban"),
        _bulk("retire"),
        csv_export_action([
            (gettext_lazy("id"), lambda c: c.pk),
            (gettext_lazy("phone"), lambda c: c.phone),
            (gettext_lazy("status"), lambda c: c.get_status_display()),
            (gettext_lazy("trust score"), lambda c: c.trust_score),
            (gettext_lazy("trust level"), lambda c: c.get_trust_level_display()),
            (gettext_lazy("warming phase"), lambda c: c.get_warming_phase_display()),
            (gettext_lazy("connected"), lambda c: c.is_connected),
            (gettext_lazy("area code (DDD)"), lambda c: c.area_code),
            (gettext_lazy("source"), lambda c: c.get_source_display()),
            (gettext_lazy("Evolution instance"), lambda c: c.instance_name),
            (gettext_lazy("created at"), lambda c: c.created_at),
            (gettext_lazy("active at"), lambda c: c.active_at),
            (gettext_lazy("banned at"), lambda c: c.banned_at),
            (gettext_lazy("retired at"), lambda c: c.retired_at),
            (gettext_lazy("updated at"), lambda c: c.updated_at),
        ], basename="chips"),
    ]
    fieldsets = [
        (None, {"fields": ["status", "phone", "source", "area_code", "provider_line_id", "instance_name"]}),
        (gettext_lazy("Trust and warming"), {"fields": ["trust_score", "trust_level", "warming_phase",
                                                        "warming_started_at"]}),
        (gettext_lazy("Connection"), {"fields": ["is_connected", "connection_changed_at", "cooling_until",
                                                 "activation_attempts"]}),
        (gettext_lazy("Timeline"), {"fields": ["created_at", "provisioned_at", "activation_started_at",
                                               "activated_at", "ready_at", "active_at", "degraded_at", "banned_at",
                                               "retired_at", "updated_at"]}),
    ]

    def get_readonly_fields(self, request, obj=None):
        return [f for fs in self.fieldsets for f in fs[1]["fields"]]

    def has_add_permission(self, request) -> bool:
        return False  # chips are bought by provisioning (or added as own numbers), not typed in

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # every fact is written by the lifecycle and the system's checks: the page only shows them

    def has_run_transitions_permission(self, request) -> bool:
        return request.user.has_perm("chips.run_chip_transitions")

    @staticmethod
    def get_fsm_block_label(fsm_field_name: str) -> str:
        return _("Change the state")

    @admin.display(description=gettext_lazy("status"), ordering="status")
    def status_badge(self, chip: Chip) -> str:
        return format_html('<span class="chip-status chip-status-{}">{}</span>', chip.status,
                           badge(chip.get_status_display(), STATUS_COLOURS.get(chip.status, "#6c757d")))

    @admin.display(description=gettext_lazy("trust score"), ordering="trust_score")
    def trust(self, chip: Chip) -> str:
        return format_html("{} <small>{}</small>", chip.trust_score, chip.get_trust_level_display())

    @admin.display(description=gettext_lazy("updated at"), ordering="updated_at")
    def updated(self, chip: Chip) -> str:
        return short_time(chip.updated_at)

    # --- transitions -----------------------------------------------------------------------------------------

    def fsm_transition_view(self, request: HttpRequest, object_id: str, transition_name: str,
                            **kwargs) -> HttpResponse:
        """GET: the confirmation page (with the reason for REASON_REQUIRED); POST: run the transition.

        Anything but an operator transition of an existing chip is a 404 (a made-up name, an internal one such as
        start_activation, a method that is not a transition); people without the permission to act get a 403.
        """
        if transition_name not in services.OPERATOR_TRANSITIONS:
            raise Http404(_("No such transition."))
        chip = self.get_object(request, object_id)
        if chip is None:
            raise Http404(_("No such chip."))
        if not self.has_view_permission(request, chip) or not self.has_run_transitions_permission(request):
            raise PermissionDenied
        change_url = reverse("admin:chips_chip_change", args=[chip.pk])
        needs_reason = transition_name in REASON_REQUIRED
        form = TransitionReasonForm(request.POST or None) if needs_reason else None
        if request.method == "POST" and (form is None or form.is_valid()):
            reason = form.cleaned_data["reason"] if form is not None else Text("op.from_admin")
            self._run_transition(request, chip, transition_name, reason)
            return HttpResponseRedirect(change_url)
        if request.method != "POST" and transition_name not in services.chip_allowed_transitions(
                chip=chip, operator_only=True):
            # A stale page (someone else moved the chip meanwhile): say what is possible now instead.
            try:
                raise services._not_allowed(chip, transition_name, operator_only=True)
            except DomainError as exc:
                self.message_user(request, exc.message, messages.WARNING)
            return HttpResponseRedirect(change_url)
        target = self._get_fsm_transition_by_name(obj=chip, transition_name=transition_name)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "original": chip,
                   "form": form, "transition_name": transition_name,
                   "transition_label": Chip.transition_label(transition_name),
                   "help_text": Chip.transition_help(transition_name),
                   "source_label": chip.get_status_display(),
                   "target_label": Chip.Status(target.target).label if target.target else "",
                   "change_url": change_url,
                   "title": _("%(transition)s %(chip)s") % {"transition": Chip.transition_label(transition_name),
                                                            "chip": chip}}
        return TemplateResponse(request, "admin/chips/chip/transition_confirm.html", context)

    def _run_transition(self, request: HttpRequest, chip: Chip, transition_name: str, reason: str) -> bool:
        # Through the same service as every other caller: history row, guards, conflicts, events.
        try:
            services.chip_transition(chip=chip.pk, transition=transition_name,
                                     actor=services.Actor.user(request.user), reason=reason, operator_only=True)
        except DomainError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return False
        self.message_user(request, _("%(transition)s: done.") % {"transition": Chip.transition_label(transition_name)},
                          messages.SUCCESS)
        return True

    def _apply_fsm_transition(self, *, obj: Chip, transition_name: str, request: HttpRequest, kwargs=None) -> bool:
        # django-fsm's own path (a POST of the change form): never reached, the page cannot be saved; kept safe.
        if transition_name not in services.OPERATOR_TRANSITIONS or transition_name in REASON_REQUIRED:
            raise Http404
        if not self.has_run_transitions_permission(request):
            raise PermissionDenied
        return self._run_transition(request, obj, transition_name, _("from the admin"))


# The alerts', the history's and the notifications' screens (chips/alerts_admin.py), registered with these.
from chips import alerts_admin  # noqa: E402, F401
