"""A pipeline that never stalls silently (W2 3/7): chips waiting for an SMS code, chips activating with no job.

* A pending chip with no WhatsApp code after SMS_WAIT_MINUTES: the webhook may have been lost, so the pool reads
  the line's inbox at Salvy (its documented fallback) and, when a code is there, starts the activation exactly as
  the webhook would have. Still nothing: a warning alert, with the way out (retry or cancel from the admin).
* An activating chip without a live activation job (its job was lost, or never written) goes back to pending with
  an alert, so the SMS path can start again.

Run by beat every few minutes; bounded queries, work only for the chips that are stuck.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Exists, Max, OuterRef, Q
from django.utils import timezone

from activation.models import ActivationJob, SmsReceipt
from activation.services import sms_receive
from chipfarm.client import SalvyClient, SalvyError
from chips.models import Chip, ChipAlert
from chips.services import Actor, alert_raise, chip_transition
from common.exceptions import DomainError
from common.texts import Text

logger = logging.getLogger(__name__)
ACTOR = Actor.task("chipfarm.sweep_pipeline")
BATCH = 50
S = Chip.Status


@dataclass
class PipelineReport:
    polled: list[int] = field(default_factory=list)
    started: list[int] = field(default_factory=list)
    alerted: list[int] = field(default_factory=list)
    reset: list[int] = field(default_factory=list)


def _waiting_since(state: str):
    """When the chip last entered `state` (its history), for an annotation."""
    return Max("transitions__created_at", filter=Q(transitions__target=state))


def pending_chip_poll(*, chip: Chip, salvy: SalvyClient, now: datetime) -> bool:
    """Read the line's inbox and feed the newest unused WhatsApp code to the normal SMS path. True when it
    started the activation."""
    messages = [m for m in salvy.list_sms(chip.provider_line_id) if m.code]
    seen = set(SmsReceipt.objects.filter(sms_id__in=[m.sms_id for m in messages]).values_list("sms_id", flat=True))
    for message in sorted(messages, key=lambda m: m.received_at or now, reverse=True):
        if message.sms_id in seen:
            continue
        # The inbox has no Svix delivery id: the SMS id stands in for it (one receipt per SMS).
        outcome = sms_receive(svix_id=f"inbox:{message.sms_id}", sms=message, received_at=now)
        if outcome.outcome == SmsReceipt.Outcome.JOB_CREATED:
            logger.info("chip %s: activation started from the Salvy inbox (SMS %s)", chip.pk, message.sms_id)
            return True
    return False


def pipeline_sweep(*, now: datetime | None = None, salvy: SalvyClient | None = None) -> PipelineReport:
    """One pass over stuck pipeline chips (see the module docstring)."""
    now = now or timezone.now()
    report = PipelineReport()
    wait = timedelta(minutes=settings.SMS_WAIT_MINUTES)
    stale_pending = list(
        Chip.objects.filter(status=S.PENDING, provider_line_id__isnull=False)
        .annotate(since=_waiting_since(S.PENDING)).filter(since__lt=now - wait).order_by("since")[:BATCH]
    )
    if stale_pending:
        own = salvy is None
        salvy = salvy or SalvyClient()
        try:
            for chip in stale_pending:
                report.polled.append(chip.pk)
                try:
                    started = pending_chip_poll(chip=chip, salvy=salvy, now=now)
                except SalvyError as exc:
                    logger.warning("chip %s: Salvy inbox unreadable (%s)", chip.pk, exc.kind)
                    started = False
                if started:
                    report.started.append(chip.pk)
                    continue
                report.alerted.append(chip.pk)
                minutes = int((now - chip.since).total_seconds() // 60)
                alert_raise(kind="no_sms_code", severity=ChipAlert.Severity.WARNING, chip=chip,
                            message=Text("alert.no_sms_code", chip=chip, minutes=minutes),
                            action_taken=Text("action.retry_or_cancel"))
        finally:
            if own:
                salvy.close()
    live_job = ActivationJob.objects.filter(chip=OuterRef("pk"), status__in=ActivationJob.IN_FLIGHT)
    orphans = list(
        Chip.objects.filter(status=S.ACTIVATING).annotate(since=_waiting_since(S.ACTIVATING), has_job=Exists(live_job))
        .filter(has_job=False, since__lt=now - timedelta(minutes=2)).order_by("since")[:BATCH]
    )
    for chip in orphans:
        try:
            chip_transition(chip=chip.pk, transition="activation_failed", actor=ACTOR,
                            reason=Text("op.no_live_job"))
        except DomainError as exc:
            logger.warning("chip %s: could not send it back to pending: %s", chip.pk, exc.message)
            continue
        report.reset.append(chip.pk)
        alert_raise(kind="activation_orphaned", severity=ChipAlert.Severity.WARNING, chip=chip,
                    message=Text("alert.activation_orphaned", chip=chip),
                    action_taken=Text("action.back_to_pending"))
    return report


def pipeline_chip_retry(*, chip_id: int, actor: Actor) -> str:
    """An operator's "retry" on a stuck pipeline chip: read the inbox now (pending), or fall back to pending."""
    chip = Chip.objects.get(pk=chip_id)
    if chip.status == S.PENDING and chip.provider_line_id:
        with SalvyClient() as salvy:
            started = pending_chip_poll(chip=chip, salvy=salvy, now=timezone.now())
        return "started" if started else "no_code"
    if chip.status == S.ACTIVATING and not ActivationJob.objects.in_flight().filter(chip=chip).exists():
        chip_transition(chip=chip.pk, transition="activation_failed", actor=actor,
                        reason=Text("op.retried_by_operator"))
        return "pending"
    return "nothing_to_do"

