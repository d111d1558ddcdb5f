"""Finishing an activation job: success starts the chip warming; failure sends it back to pending with an alert,
and retires it (cancelling its Salvy line) at the last allowed attempt.

Both are a compare-and-set on the job row, so of two workers finishing one job (a poll and the sweep, say) one
finishes it and the other is answered "skipped".
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from activation.client import ActivationStatus
from activation.models import ActivationJob
from activation.services.queueing import CANCEL_LINE_REASON, CANCEL_LINE_TASK, send_on_commit
from chips.models import Chip, ChipAlert
from chips.services import Actor, alert_raise, chip_transition
from common.texts import Text, choice
from instances.models import InstanceLink

logger = logging.getLogger(__name__)

J = ActivationJob.Status

MAX_CHIP_ATTEMPTS = 3  # failed activations before the chip is retired and its line cancelled


def _end_links(job: ActivationJob, reason: str, now) -> None:
    """The activation's link dies with it (410 from then on)."""
    InstanceLink.objects.filter(instance__chip_id=job.chip_id, purpose=InstanceLink.Purpose.ACTIVATION,
                                ended_at__isnull=True).update(ended_at=now, end_reason=reason, updated_at=now)


def job_succeed(*, job: ActivationJob, state: ActivationStatus, actor: Actor) -> str:
    """Finish an in-flight job as succeeded; its chip starts warming (an alert instead when it is no longer
    activating). Returns succeeded, or skipped when the job was finished already."""
    now = timezone.now()
    with transaction.atomic():
        moved = ActivationJob.objects.filter(pk=job.pk, status__in=ActivationJob.POLLING).update(
            status=J.SUCCEEDED, message=state.message[:500], finished_at=now, next_poll_at=None,
            started_at=Coalesce(F("started_at"), Value(now)), updated_at=now,
        )
        if not moved:
            return "skipped"
        _end_links(job, InstanceLink.End.LINKED, now)
        chip = Chip.objects.select_for_update().get(pk=job.chip_id)
        if chip.status != Chip.Status.ACTIVATING:
            # Someone moved the chip (an operator retired it) while the emulator was registering its number.
            alert_raise(kind="activation_orphaned", severity=ChipAlert.Severity.WARNING, chip=chip,
                        message=Text("alert.activation_registered_moved", chip=chip, job=job.pk,
                                     status=choice("chips.Chip", "status", chip.status)))
            return J.SUCCEEDED
        chip_transition(chip=chip, transition="activation_succeeded", actor=actor,
                        reason=Text("act.job_succeeded", job=job.pk, seconds=state.seconds))
    logger.info("activation job %s succeeded: chip %s is warming", job.pk, job.chip_id)
    return J.SUCCEEDED


def job_fail(*, job: ActivationJob, status: str, step: str, message: str, actor: Actor,
             screenshot_path: str | None = None) -> str:
    """Finish an in-flight job as failed or timed out; its chip goes back to pending with an alert.

    The chip's `activation_failed` transition counts the attempt; at `MAX_CHIP_ATTEMPTS` the chip is retired,
    its Salvy line cancel is queued (chipfarm.cancel_line, reason "technical-issues") and a critical alert
    raised, all in the transaction that finishes the job. Returns the status, or skipped when the job was
    finished already.
    """
    now = timezone.now()
    step = (step or "unknown")[:64]
    shot = (screenshot_path or "")[:500]
    with transaction.atomic():
        moved = ActivationJob.objects.filter(pk=job.pk, status__in=ActivationJob.IN_FLIGHT).update(
            status=status, step=step, screenshot_path=shot, message=(message or "")[:500], finished_at=now,
            next_poll_at=None, updated_at=now,
        )
        if not moved:
            return "skipped"
        _end_links(job, InstanceLink.End.CANCELLED, now)
        chip = Chip.objects.select_for_update().get(pk=job.chip_id)
        if chip.status != Chip.Status.ACTIVATING:
            logger.warning("activation job %s %s, but chip %s is %s: left as it is", job.pk, status, chip.pk,
                           chip.status)
            return status
        chip = chip_transition(chip=chip, transition="activation_failed", actor=actor,
                               reason=Text("act.job_failed", job=job.pk, step=step,
                                           status=choice("activation.ActivationJob", "status", status)))
        alert_raise(
            kind="activation_failed", severity=ChipAlert.Severity.WARNING, chip=chip,
            message=Text("alert.activation_failed", chip=chip, step=step, attempt=chip.activation_attempts,
                         max=MAX_CHIP_ATTEMPTS, job=job.pk, shot=shot or Text("alert.none"), message=message),
            action_taken=Text("action.back_to_pending_code"),
        )
        if chip.activation_attempts >= MAX_CHIP_ATTEMPTS:
            _chip_give_up(chip=chip, actor=actor)
    logger.warning("activation job %s %s at step %s (chip %s)", job.pk, status, step, job.chip_id)
    return status


def _chip_give_up(*, chip: Chip, actor: Actor) -> None:
    attempts = chip.activation_attempts
    chip = chip_transition(chip=chip, transition="retire", actor=actor,
                           reason=Text("act.gave_up", n=attempts))
    send_on_commit(CANCEL_LINE_TASK, kwargs={"chip_id": chip.pk, "reason": CANCEL_LINE_REASON})
    alert_raise(
        kind="activation_gave_up", severity=ChipAlert.Severity.CRITICAL, chip=chip,
        message=Text("alert.activation_gave_up", chip=chip, attempts=attempts),
        action_taken=Text("action.retired_cancel"),
    )

