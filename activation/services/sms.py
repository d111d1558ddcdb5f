"""Receiving Salvy's `sms.received`: a pending chip's WhatsApp code starts its activation.

The delivery is parsed by activation.salvy (the one Salvy SMS parser); this module records it and, for a code
meant for a pending chip, moves the chip to activating and queues the job's first submit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import Case, IntegerField, Q, Value, When
from django.utils import timezone

from activation.models import ActivationJob, SmsReceipt
from activation.salvy import InboundSms
from activation.services.queueing import SUBMIT_TASK, send_on_commit
from chips.models import Chip
from chips.services import Actor, chip_transition

logger = logging.getLogger(__name__)

WEBHOOK_ACTOR = Actor.webhook("salvy")


@dataclass(frozen=True)
class SmsOutcome:
    outcome: str  # one of SmsReceipt.Outcome
    chip_id: int | None = None
    job_id: int | None = None


def _chip_for(sms: InboundSms) -> Chip | None:
    """The chip the SMS was sent to, row-locked: by Salvy line id first, else by number; live chips first."""
    match = Q()
    ranks = [When(status=Chip.Status.RETIRED, then=Value(2))]
    if sms.line_id:
        match |= Q(provider_line_id=sms.line_id)
        ranks.append(When(provider_line_id=sms.line_id, then=Value(0)))
    if sms.phone:
        match |= Q(phone=sms.phone)
    if not match:
        return None
    rank = Case(*ranks, default=Value(1), output_field=IntegerField())
    return (Chip.objects.filter(match).annotate(match_rank=rank).order_by("match_rank", "-pk")
            .select_for_update(of=("self",)).first())


def sms_receive(*, svix_id: str, sms: InboundSms, received_at: datetime | None = None) -> SmsOutcome:
    """Record one authentic Salvy delivery; a pending chip's WhatsApp code starts its activation.

    The chip moves pending → activating and a queued job is created in one transaction with the receipt; the
    submit task is queued after commit. Every other case (no code, unknown line, chip not pending, the same
    delivery or SMS again) is only recorded. The unique keys on the receipt's svix-id and the job's SMS id
    make concurrent duplicates safe: the loser rolls back and is answered "duplicate".
    """
    received_at = received_at or timezone.now()
    svix_id = svix_id[:64]  # Svix ids are ~30 characters; the column bounds what a sender can make us store
    if SmsReceipt.objects.filter(svix_id=svix_id).exists():
        return SmsOutcome(SmsReceipt.Outcome.DUPLICATE)
    try:
        with transaction.atomic():
            outcome, chip, job = _sms_apply(svix_id, sms, received_at)
            _receipt(svix_id, sms, received_at, outcome, chip=chip, job=job)
    except IntegrityError:
        # A concurrent delivery of the same svix-id or of the same SMS committed first.
        try:
            with transaction.atomic():
                _receipt(svix_id, sms, received_at, SmsReceipt.Outcome.DUPLICATE)
        except IntegrityError:
            pass  # the very same delivery: it is recorded once already
        return SmsOutcome(SmsReceipt.Outcome.DUPLICATE)
    logger.info("salvy sms %s (svix %s) for chip %s: %s", sms.sms_id, svix_id, chip.pk if chip else None, outcome)
    return SmsOutcome(outcome, chip_id=chip.pk if chip else None, job_id=job.pk if job else None)


def _sms_apply(svix_id: str, sms: InboundSms, now: datetime) -> tuple[str, Chip | None, ActivationJob | None]:
    Outcome = SmsReceipt.Outcome  # noqa: N806
    chip = _chip_for(sms)
    if chip is None:
        return Outcome.UNKNOWN_LINE, None, None
    if not sms.code:
        return Outcome.NO_CODE, chip, None
    # Checked under the chip's row lock: a concurrent delivery of this SMS has committed its job by now.
    if ActivationJob.objects.filter(sms_id=sms.sms_id, retry_of__isnull=True).exists():
        return Outcome.DUPLICATE, chip, None
    if chip.status != Chip.Status.PENDING:
        return Outcome.CHIP_NOT_PENDING, chip, None
    chip = chip_transition(chip=chip, transition="start_activation", actor=WEBHOOK_ACTOR,
                           reason=f"WhatsApp code received by SMS {sms.sms_id}")
    job = ActivationJob.objects.create(chip=chip, sms_code=sms.code, sms_id=sms.sms_id, svix_id=svix_id,
                                       next_poll_at=now)
    send_on_commit(SUBMIT_TASK, args=[job.pk])
    return Outcome.JOB_CREATED, chip, job


def _receipt(svix_id: str, sms: InboundSms, received_at: datetime, outcome: str, *, chip: Chip | None = None,
             job: ActivationJob | None = None) -> SmsReceipt:
    return SmsReceipt.objects.create(
        svix_id=svix_id, sms_id=sms.sms_id, line_id=sms.line_id, phone=sms.phone, origin=sms.origin,
        text=sms.text, code=sms.code, outcome=outcome, chip=chip, job=job, received_at=received_at,
    )
