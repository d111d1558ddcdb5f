"""Operators' screens for activation jobs (with a retry action) and the Salvy SMS log (read-only)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from activation import services
from activation.models import ActivationJob, SmsReceipt
from chips.admin import NoDeleteMixin, PhoneSearchMixin
from chips.services import Actor
from common.exceptions import DomainError


class OutcomeFilter(admin.SimpleListFilter):
    """"Which jobs need me?": the ones still going, and the ones that ended badly."""

    title = _("outcome")
    parameter_name = "outcome"

    def lookups(self, request, model_admin):
        return [("in_flight", _("In progress")), ("unsuccessful", _("Failed or timed out"))]

    def queryset(self, request, queryset):
        if self.value() == "in_flight":
            return queryset.in_flight()
        if self.value() == "unsuccessful":
            return queryset.filter(status__in=ActivationJob.RETRYABLE)
        return queryset


@admin.register(ActivationJob)
class ActivationJobAdmin(NoDeleteMixin, PhoneSearchMixin, admin.ModelAdmin):
    list_display = ["id", "chip", "status", "step", "screenshot_path", "attempts", "polls", "created_at",
                    "submitted_at", "finished_at", "duration"]
    list_filter = [OutcomeFilter, "status", "step"]
    list_select_related = ["chip"]
    search_fields = ["chip__phone", "sms_id", "svix_id", "activator_id"]
    phone_search_fields = ("chip__phone",)
    raw_id_fields = ["chip", "retry_of"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    actions = ["retry"]
    fields = ["chip", "status", "step", "screenshot_path", "message", "sms_code", "sms_id", "svix_id", "retry_of",
              "activator_id", "attempts", "polls", "created_at", "submitted_at", "started_at", "finished_at",
              "deadline_at", "next_poll_at", "updated_at"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ActivationJob | None = None) -> bool:
        return False  # written by the activation tasks; the page shows it, the retry action acts

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("activation.change_activationjob")

    @admin.display(description=_("duration"))
    def duration(self, job: ActivationJob) -> str:
        if not (job.submitted_at and job.finished_at):
            return "—"
        return f"{int((job.finished_at - job.submitted_at).total_seconds())} s"

    @admin.action(description=_("Retry the selected failed or timed-out activations"), permissions=["retry"])
    def retry(self, request: HttpRequest, queryset: QuerySet[ActivationJob]) -> None:
        retried, refused = 0, []
        for job_id in queryset.order_by("pk").values_list("pk", flat=True):
            try:
                services.job_retry(job_id=job_id, actor=Actor.user(request.user))
            except DomainError as exc:
                refused.append(exc.message)
            else:
                retried += 1
        if retried:
            self.message_user(request, ngettext("%(count)d activation queued again.",
                                                "%(count)d activations queued again.", retried) % {"count": retried},
                              messages.SUCCESS)
        for reason in refused:
            self.message_user(request, reason, messages.WARNING)


@admin.register(SmsReceipt)
class SmsReceiptAdmin(NoDeleteMixin, PhoneSearchMixin, admin.ModelAdmin):
    list_display = ["received_at", "outcome", "chip", "phone", "code", "sms_id", "job", "text"]
    list_filter = ["outcome"]
    list_select_related = ["chip", "job"]
    search_fields = ["sms_id", "svix_id", "phone", "line_id"]
    phone_search_fields = ("phone",)
    raw_id_fields = ["chip", "job"]
    date_hierarchy = "received_at"
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: SmsReceipt | None = None) -> bool:
        return False

