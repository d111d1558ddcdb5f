"""The operator's linking screens on the chip admin (W2 3/7): add a number the company owns, link or re-link a
chip with a live QR and pairing code, retry or cancel a chip stuck in the pipeline.

Mixed into the chip admin that chipfarm composes (chipfarm.admin.PoolChipAdmin): these screens need the gateway
and the pool's services, which the chips app may not know.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from chipfarm.numbers import chip_add_own
from chipfarm.pipeline import pipeline_chip_retry
from chips.models import Chip
from chips.services import Actor, chip_transition
from common.exceptions import DomainError
from common.texts import Text
from instances.linking import chip_link
from instances.models import Instance, InstanceLink


class OwnNumberForm(forms.Form):
    phone = forms.CharField(label=gettext_lazy("phone"), max_length=40,
                            help_text=gettext_lazy("In any common format, e.g. +55 61 98765-4321."))
    warm = forms.BooleanField(label=gettext_lazy("an aged number (declared warm)"), required=False,
                              help_text=gettext_lazy("Its warming starts at a later phase."))


def _local(moment) -> str:
    return formats.date_format(timezone.localtime(moment), "SHORT_DATETIME_FORMAT")


def link_state(link: InstanceLink, now=None) -> tuple[str, str]:
    """The link page's state (connecting / linked / expired) and the line under it: until when the link is good,
    or when it ended — in São Paulo time, as the admin shows times. Reads only; the page's poll ends the link."""
    now = now or timezone.now()
    if link.ended_at is not None and link.end_reason == InstanceLink.End.LINKED:
        return "linked", _("Linked at %(time)s (São Paulo time).") % {"time": _local(link.ended_at)}
    if link.ended_at is None and link.expires_at > now:
        return "connecting", _("This link is valid until %(time)s (São Paulo time).") % {
            "time": _local(link.expires_at)}
    if link.ended_at is None or link.end_reason == InstanceLink.End.EXPIRED:
        return "expired", _("This link expired at %(time)s (São Paulo time); start a new one.") % {
            "time": _local(link.expires_at)}
    return "expired", _("This link ended at %(time)s (%(reason)s); start a new one.") % {
        "time": _local(link.ended_at), "reason": link.get_end_reason_display()}


class LinkingAdminMixin:
    change_list_template = "admin/chipfarm/chip_change_list.html"
    change_form_template = "admin/chipfarm/chip_change_form.html"

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("add-own/", wrap(self.add_own_view), name="chips_chip_add_own"),
            path("<int:chip_id>/link/", wrap(self.link_view), name="chips_chip_link"),
            path("<int:chip_id>/link/status/", wrap(self.link_status_view), name="chips_chip_link_status"),
            *super().get_urls(),
        ]

    def _may_act(self, request: HttpRequest) -> None:
        if not request.user.has_perm("chips.run_chip_transitions"):
            raise PermissionDenied

    def add_own_view(self, request: HttpRequest) -> HttpResponse:
        """ "Add a number I own": no purchase; the chip waits for its link."""
        self._may_act(request)
        form = OwnNumberForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                chip = chip_add_own(phone=form.cleaned_data["phone"], warm=form.cleaned_data["warm"],
                                    actor=Actor.user(request.user))
            except DomainError as exc:
                form.add_error("phone" if getattr(exc, "extra", {}).get("field") == "phone" else None, exc.message)
            else:
                self.message_user(request, _("Number %(phone)s added: link it now.") % {"phone": chip.phone},
                                  messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:chips_chip_change", args=[chip.pk]))
        context = {**self.admin_site.each_context(request), "form": form, "opts": self.model._meta,
                   "title": _("Add a number I own")}
        return TemplateResponse(request, "admin/chipfarm/add_own_number.html", context)

    def link_view(self, request: HttpRequest, chip_id: int) -> HttpResponse:
        """POST starts a link; GET shows the live QR and pairing code of the chip's open link."""
        chip = Chip.objects.filter(pk=chip_id).first()
        if chip is None:
            raise Http404
        if request.method == "POST":
            self._may_act(request)
            try:
                chip_link(chip=chip, requested_by=request.user.get_username())
            except DomainError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                return HttpResponseRedirect(reverse("admin:chips_chip_change", args=[chip.pk]))
            return HttpResponseRedirect(reverse("admin:chips_chip_link", args=[chip.pk]))
        if not self.has_view_permission(request):
            raise PermissionDenied
        link = InstanceLink.objects.filter(instance__chip=chip).order_by("-created_at").first()
        state, expiry = link_state(link) if link is not None else ("none", "")
        context = {**self.admin_site.each_context(request), "chip": chip, "link": link, "opts": self.model._meta,
                   "link_state": state, "link_expiry": expiry,
                   "title": _("Link %(chip)s") % {"chip": chip},
                   "status_url": reverse("admin:chips_chip_link_status", args=[chip.pk])}
        return TemplateResponse(request, "admin/chipfarm/link.html", context)

    def link_status_view(self, request: HttpRequest, chip_id: int) -> JsonResponse:
        """What the link page polls: connecting (with the current code) / linked / expired."""
        from instances.linking import link_current

        if not self.has_view_permission(request):
            raise PermissionDenied
        link = InstanceLink.objects.filter(instance__chip_id=chip_id).order_by("-created_at").first()
        if link is None:
            return JsonResponse({"state": "none"})
        if link.ended_at is None:
            try:
                code = link_current(token=link.token)
            except DomainError:
                link.refresh_from_db()
            else:
                return JsonResponse({"state": "connecting", "code": code.code, "pairing_code": code.pairing_code,
                                     "expires_at": code.expires_at.isoformat() if code.expires_at else None,
                                     "qr": f"/activation/link/{link.token}", "expiry": link_state(link)[1]})
        state, expiry = link_state(link)
        return JsonResponse({"state": state, "reason": link.get_end_reason_display(), "expiry": expiry})

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            instance = Instance.objects.filter(chip=obj).first()
            context["can_link"] = (request.user.has_perm("chips.run_chip_transitions") and instance is not None
                                   and obj.status not in (Chip.Status.RETIRED, Chip.Status.BANNED,
                                                          Chip.Status.PROVISIONING, Chip.Status.ACTIVATING)
                                   and not (instance.state == Instance.State.OPEN and obj.is_connected))
            context["link_url"] = reverse("admin:chips_chip_link", args=[obj.pk])
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    @admin.action(description=gettext_lazy("Retry the stuck pipeline step"), permissions=["run_transitions"])
    def retry_pipeline(self, request: HttpRequest, queryset: QuerySet[Chip]) -> None:
        for chip in queryset.filter(status__in=Chip.PIPELINE_STATES):
            outcome = pipeline_chip_retry(chip_id=chip.pk, actor=Actor.user(request.user))
            self.message_user(request, _("Chip %(chip)s: %(outcome)s.") % {"chip": chip, "outcome": {
                "started": _("activation started from the Salvy inbox"), "no_code": _("still no code at Salvy"),
                "pending": _("back to pending"), "nothing_to_do": _("nothing to retry")}[outcome]})

    @admin.action(description=gettext_lazy("Cancel (retire, line given back)"), permissions=["run_transitions"])
    def cancel_pipeline(self, request: HttpRequest, queryset: QuerySet[Chip]) -> None:
        done = 0
        for chip in queryset.filter(status__in=Chip.PIPELINE_STATES):
            try:
                chip_transition(chip=chip.pk, transition="retire", actor=Actor.user(request.user),
                                reason=Text("op.cancelled_from_pipeline", who=request.user.get_username()),
                                operator_only=True)
                done += 1
            except DomainError as exc:
                self.message_user(request, exc.message, messages.WARNING)
        self.message_user(request, _("%(n)d chip(s) cancelled; their lines are given back.") % {"n": done},
                          messages.SUCCESS)

