"""Writes for activation (DESIGN §6): the Salvy SMS that starts it, the activator job that carries it out.

    sms.received ─▶ sms_receive ─▶ chip pending→activating + job queued ─on commit─▶ activation.submit_job
    activation.submit_job ─▶ job_submit ─▶ POST /activate ─▶ job submitted ─countdown 10 s─▶ activation.poll_job
    activation.poll_job ─▶ job_poll ─▶ GET /activate/{id} ─▶ again in ≤ 10 s | succeeded | failed | timed_out
    activation.sweep_jobs (beat, every minute) ─▶ jobs_sweep ─▶ re-queue chains that died with a worker

Every step is one short call followed by a compare-and-set on the job row, so a task delivered twice, a sweep
racing a live chain, or two workers on one job all end with one submit per attempt and one finisher. Nothing
here sleeps or loops waiting on the activator: waiting is a countdown of at most `MAX_COUNTDOWN` seconds, and
"later" beyond that is the job's due-at (`next_poll_at`) read by the sweep.

Tasks are queued by name (`current_app.send_task`) after commit: our own, so this module needs not import the
tasks module that imports it, and chipfarm's `cancel_line`, which activation may not import (DESIGN §11).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, F, IntegerField, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext as _

from activation.client import ActivationStatus, ActivatorClient, ActivatorError
from activation.models import ActivationJob, SmsReceipt
from chips.models import Chip, ChipAlert
from chips.services import Actor, alert_raise, chip_transition
from common.exceptions import DomainError, InvalidInput, NotFound
from common.inbound import parse_json_body

logger = logging.getLogger(__name__)

J = ActivationJob.Status

SUBMIT_TASK = "activation.submit_job"
POLL_TASK = "activation.poll_job"
SWEEP_TASK = "activation.sweep_jobs"
# Owned by chipfarm (it holds the Salvy client); sent by name because activation may not import it.
CANCEL_LINE_TASK = "chipfarm.cancel_line"
CANCEL_LINE_REASON = "technical-issues"

POLL_INTERVAL = 10  # seconds between status polls (the original design's cadence)
SUBMIT_BACKOFF = (5, 10, 20, 40)  # seconds before submit attempts 2, 3, 4 and 5
MAX_SUBMIT_ATTEMPTS = len(SUBMIT_BACKOFF) + 1
JOB_TIMEOUT = timedelta(minutes=10)  # from submit; the contract's "gives up after 10 minutes"
MAX_CHIP_ATTEMPTS = 3  # failed activations before the chip is retired and its line cancelled
# No task waits longer than this in the broker: Redis redelivers unacked messages after its visibility
# timeout, and a worker restart must not strand a job for long. Longer waits are due-at rows (STYLE).
MAX_COUNTDOWN = 60
# A task that arrives this much before its job's due-at is a stray duplicate of a live chain and is dropped.
DUE_SLACK = timedelta(seconds=2)
STALE_POLL = timedelta(seconds=60)  # a poll this overdue belongs to a chain that died
STALE_SUBMIT = timedelta(minutes=2)  # a queued job untouched this long lost its submit task
SWEEP_BATCH = 200

WEBHOOK_ACTOR = Actor.webhook("salvy")


# --- queueing -------------------------------------------------------------------------------------------------

def _send_on_commit(name: str, *, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None,
                    countdown: int | None = None) -> None:
    """Queue the task `name` once the surrounding transaction commits (at once outside one).

    `robust`: a broker outage after the commit is logged, not raised. The committed job keeps its due-at, so
    the sweep re-queues it; the webhook still answers 2xx instead of making Salvy redeliver a handled SMS.
    """
    if countdown is not None and not 0 <= countdown <= MAX_COUNTDOWN:
        raise ValueError(f"countdown {countdown} s is outside 0..{MAX_COUNTDOWN} s")

    def send() -> None:
        current_app.send_task(name, args=args, kwargs=kwargs, countdown=countdown)

    transaction.on_commit(send, robust=True)


# --- the activator client -------------------------------------------------------------------------------------

_clients: dict[tuple[str, str, float], ActivatorClient] = {}
_clients_lock = threading.Lock()


def _activator() -> ActivatorClient:
    """The process's activator client for the current settings (httpx clients are thread-safe).

    Building one costs ~70 ms (httpx loads a TLS context), more than the poll it makes; its pooled connection is
    reused by the next submit or poll. Created lazily, so each forked worker process gets its own.
    """
    key = (str(settings.CHIP_ACTIVATOR_URL), str(settings.CHIP_ACTIVATOR_API_KEY),
           float(settings.HTTP_TIMEOUT_SECONDS))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            _clients.clear()  # settings changed (tests): the old client is dropped, not closed under a user
            client = _clients[key] = ActivatorClient(base_url=key[0], api_key=key[1], timeout=key[2])
        return client


# --- the Salvy webhook ----------------------------------------------------------------------------------------

# WhatsApp writes its code as "123456" or "123-456".
_CODE_IN_TEXT = re.compile(r"(?<!\d)(\d{3})-?(\d{3})(?!\d)")


@dataclass(frozen=True)
class InboundSms:
    """The `data` of an `sms.received` delivery, normalised."""

    sms_id: str
    line_id: str
    phone: str  # E.164 with "+", or "" when absent
    origin: str
    text: str
    code: str  # the WhatsApp code, digits only, or "" when the SMS carries none


@dataclass(frozen=True)
class SalvyEvent:
    type: str
    sms: InboundSms | None  # only for sms.received


def _text(data: dict[str, Any], name: str, *, required: bool = False) -> str:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise InvalidInput(_("data.%(name)s is required.") % {"name": name}, field=f"data.{name}")
        return ""
    if not isinstance(value, str):
        raise InvalidInput(_("data.%(name)s must be a string.") % {"name": name}, field=f"data.{name}")
    return value.strip()


def whatsapp_code(data: dict[str, Any]) -> str:
    """The code from Salvy's detection, else from the text; "" when there is none.

    Salvy detects codes per service. When it recognised the SMS as another service's code (and not WhatsApp's),
    the text is not searched: a bank's or an app's code must not start a WhatsApp activation with the wrong
    digits, which would fail and count toward the chip's retirement.
    """
    detections = data.get("detections")
    detections = detections if isinstance(detections, dict) else {}
    whatsapp = detections.get("whatsapp")
    detected = whatsapp.get("verificationCode") if isinstance(whatsapp, dict) else None
    if isinstance(detected, str | int) and not isinstance(detected, bool):
        digits = re.sub(r"\D", "", str(detected))
        if 4 <= len(digits) <= 8:
            return digits
    if any(name != "whatsapp" for name in detections):
        return ""
    match = _CODE_IN_TEXT.search(str(data.get("message") or ""))
    return match.group(1) + match.group(2) if match else ""


def salvy_event_parse(body: bytes) -> SalvyEvent:
    """The event type and, for `sms.received`, its SMS. Raises InvalidInput naming the bad field."""
    # NUL characters are stripped (PostgreSQL cannot store them; a real SMS may carry one): the SMS still counts.
    envelope = parse_json_body(body, strip_nuls=True)
    if not isinstance(envelope, dict):
        raise InvalidInput(_("The body must be a JSON object."), field="body")
    event_type = envelope.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise InvalidInput(_("type is required."), field="type")
    if event_type != "sms.received":
        return SalvyEvent(type=event_type, sms=None)
    data = envelope.get("data")
    if not isinstance(data, dict):
        raise InvalidInput(_("data must be an object."), field="data")
    sms_id = _text(data, "id", required=True)
    line_id = _text(data, "virtualPhoneAccountId")
    destination = _text(data, "destinationPhoneNumber")
    if not line_id and not destination:
        raise InvalidInput(_("data.virtualPhoneAccountId or data.destinationPhoneNumber is required."),
                           field="data.virtualPhoneAccountId")
    digits = re.sub(r"\D", "", destination)
    if data.get("message") is not None and not isinstance(data.get("message"), str):
        raise InvalidInput(_("data.message must be a string."), field="data.message")
    if data.get("detections") is not None and not isinstance(data.get("detections"), dict):
        raise InvalidInput(_("data.detections must be an object."), field="data.detections")
    return SalvyEvent(type=event_type, sms=InboundSms(
        sms_id=sms_id[:64],
        line_id=line_id[:64],
        phone=f"+{digits}"[:20] if digits else "",
        origin=_text(data, "originPhoneNumber")[:32],
        text=_text(data, "message")[:500],
        code=whatsapp_code(data),
    ))


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
    _send_on_commit(SUBMIT_TASK, args=[job.pk])
    return Outcome.JOB_CREATED, chip, job


def _receipt(svix_id: str, sms: InboundSms, received_at: datetime, outcome: str, *, chip: Chip | None = None,
             job: ActivationJob | None = None) -> SmsReceipt:
    return SmsReceipt.objects.create(
        svix_id=svix_id, sms_id=sms.sms_id, line_id=sms.line_id, phone=sms.phone, origin=sms.origin,
        text=sms.text, code=sms.code, outcome=outcome, chip=chip, job=job, received_at=received_at,
    )


# --- submitting -----------------------------------------------------------------------------------------------

def evolution_qr_url(chip: Chip) -> str:
    """Where the activator fetches the QR code that links the number to the chip's Evolution instance."""
    base = str(settings.EVOLUTION_API_URL).rstrip("/")
    return f"{base}/instance/connect/{quote(str(chip.instance_name or ''), safe='')}"


def _is_due(now: datetime) -> Q:
    return Q(next_poll_at__isnull=True) | Q(next_poll_at__lte=now + DUE_SLACK)


def job_submit(*, job_id: int) -> str:
    """Make one submit attempt of a queued job; returns submitted | retry | failed | skipped.

    Accepted: the job is submitted, its deadline set, and the first poll queued in `POLL_INTERVAL` s. A full
    queue (503), an outage or a timeout: the next attempt is queued after `SUBMIT_BACKOFF`; after
    `MAX_SUBMIT_ATTEMPTS` (or on an error that retrying cannot fix) the job fails like a failed activation.
    A job that is not queued, or whose attempt another delivery of this task already claimed, is skipped.
    """
    job = ActivationJob.objects.select_related("chip").filter(pk=job_id).first()
    if job is None or job.status != J.QUEUED:
        return "skipped"
    now = timezone.now()
    # Claim the attempt before calling out: a duplicate delivery, or a sweep re-queue racing this task, finds
    # `attempts` moved (or the due-at ahead) and stops, so the activator gets one POST per attempt.
    claimed = ActivationJob.objects.filter(_is_due(now), pk=job.pk, status=J.QUEUED, attempts=job.attempts).update(
        attempts=F("attempts") + 1, next_poll_at=now, updated_at=now
    )
    if not claimed:
        return "skipped"
    attempt = job.attempts + 1
    actor = Actor.task(SUBMIT_TASK)
    chip = job.chip
    if chip.status != Chip.Status.ACTIVATING:
        # An operator moved the chip (retired it, say) while the job waited: do not register the number.
        return _job_fail(job, status=J.FAILED, step="submit", actor=actor,
                         message=f"Not submitted: the chip is {chip.status}, no longer activating.")
    try:
        activation_id = _activator().submit(number=chip.phone or "", sms_code=job.sms_code,
                                            evolution_qr_url=evolution_qr_url(chip))
    except ValueError as exc:  # the chip's number is not a Brazilian number: no retry can fix it
        return _job_fail(job, status=J.FAILED, step="submit", message=str(exc), actor=actor)
    except ActivatorError as exc:
        now = timezone.now()
        if exc.retryable and attempt < MAX_SUBMIT_ATTEMPTS:
            delay = SUBMIT_BACKOFF[attempt - 1]
            with transaction.atomic():
                moved = ActivationJob.objects.filter(pk=job.pk, status=J.QUEUED, attempts=attempt).update(
                    next_poll_at=now + timedelta(seconds=delay), updated_at=now,
                    message=f"submit attempt {attempt} failed ({exc.kind}): {exc.message}"[:500],
                )
                if moved:
                    _send_on_commit(SUBMIT_TASK, args=[job.pk], countdown=delay)
            logger.info("activation job %s: submit attempt %s failed (%s); next in %s s", job.pk, attempt, exc.kind,
                        delay)
            return "retry"
        return _job_fail(job, status=J.FAILED, step="submit", actor=actor,
                         message=f"The activator refused the job after {attempt} attempt(s) ({exc.kind}): "
                                 f"{exc.message}")
    now = timezone.now()
    with transaction.atomic():
        moved = ActivationJob.objects.filter(pk=job.pk, status=J.QUEUED, attempts=attempt).update(
            status=J.SUBMITTED, activator_id=activation_id[:64], submitted_at=now, deadline_at=now + JOB_TIMEOUT,
            next_poll_at=now + timedelta(seconds=POLL_INTERVAL), message="", updated_at=now,
        )
        if moved:
            _send_on_commit(POLL_TASK, args=[job.pk], countdown=POLL_INTERVAL)
    if not moved:
        logger.warning("activation job %s changed while it was submitted; activator id %s is not followed", job.pk,
                       activation_id)
        return "skipped"
    logger.info("activation job %s submitted as %s", job.pk, activation_id)
    return "submitted"


# --- polling --------------------------------------------------------------------------------------------------

def job_poll(*, job_id: int) -> str:
    """Ask the activator once how a submitted job is doing, then finish the job or queue the next poll.

    Returns submitted | running | succeeded | failed | timed_out | skipped. Success: the chip starts warming.
    Failure: the chip goes back to pending with an alert naming the step and the screenshot. Still queued or
    running (or the activator did not answer): the next poll is queued in at most `POLL_INTERVAL` s, until the
    deadline, when the job times out. A finished job, or a poll that is not due (a stray duplicate of a live
    chain), is skipped.
    """
    job = ActivationJob.objects.filter(pk=job_id).first()
    if job is None or job.status not in ActivationJob.POLLING:
        return "skipped"
    now = timezone.now()
    claimed = ActivationJob.objects.filter(_is_due(now), pk=job.pk, status=job.status, polls=job.polls).update(
        polls=F("polls") + 1, next_poll_at=now + timedelta(seconds=POLL_INTERVAL), updated_at=now
    )
    if not claimed:
        return "skipped"
    actor = Actor.task(POLL_TASK)
    state: ActivationStatus | None = None
    error = ""
    try:
        state = _activator().status(job.activator_id)
    except ActivatorError as exc:
        if exc.kind == "not_found":
            return _job_fail(job, status=J.FAILED, step="lost", actor=actor,
                             message=f"The activator does not know activation {job.activator_id} any more.")
        error = f"{exc.kind}: {exc.message}"
        logger.warning("activation job %s: status poll failed (%s)", job.pk, error)
    if state is not None and state.succeeded:
        return _job_succeed(job, state, actor=actor)
    if state is not None and state.status == "failed":
        return _job_fail(job, status=J.FAILED, step=state.step or "unknown", screenshot_path=state.screenshot_path,
                         message=state.message, actor=actor)
    now = timezone.now()
    deadline = job.deadline_at or (job.submitted_at or job.created_at) + JOB_TIMEOUT
    if now >= deadline:
        last = state.status if state is not None else error
        return _job_fail(job, status=J.TIMED_OUT, step="timeout", actor=actor,
                         message=f"No result from the activator {int(JOB_TIMEOUT.total_seconds() // 60)} minutes "
                                 f"after submit ({job.polls + 1} polls; last answer: {last}).")
    countdown = max(1, min(POLL_INTERVAL, int((deadline - now).total_seconds() + 0.999)))
    updates: dict[str, Any] = {"next_poll_at": now + timedelta(seconds=countdown), "updated_at": now}
    if state is not None:
        updates["message"] = state.message[:500]
        if state.status == "running" and job.status == J.SUBMITTED:
            updates.update(status=J.RUNNING, started_at=now)
    with transaction.atomic():
        moved = ActivationJob.objects.filter(pk=job.pk, status=job.status, polls=job.polls + 1).update(**updates)
        if moved:
            _send_on_commit(POLL_TASK, args=[job.pk], countdown=countdown)
    return str(updates.get("status", job.status)) if moved else "skipped"


# --- finishing ------------------------------------------------------------------------------------------------

def _job_succeed(job: ActivationJob, state: ActivationStatus, *, actor: Actor) -> str:
    now = timezone.now()
    with transaction.atomic():
        moved = ActivationJob.objects.filter(pk=job.pk, status__in=ActivationJob.POLLING).update(
            status=J.SUCCEEDED, message=state.message[:500], finished_at=now, next_poll_at=None,
            started_at=Coalesce(F("started_at"), Value(now)), updated_at=now,
        )
        if not moved:
            return "skipped"
        chip = Chip.objects.select_for_update().get(pk=job.chip_id)
        if chip.status != Chip.Status.ACTIVATING:
            # Someone moved the chip (an operator retired it) while the emulator was registering its number.
            alert_raise(kind="activation_orphaned", severity=ChipAlert.Severity.WARNING, chip=chip,
                        message=_("The activator registered chip %(chip)s on WhatsApp (job %(job)d), but the "
                                  "chip is %(status)s now: check the number.")
                        % {"chip": chip, "job": job.pk, "status": chip.status})
            return J.SUCCEEDED
        chip_transition(chip=chip, transition="activation_succeeded", actor=actor,
                        reason=f"activation job {job.pk} succeeded in {state.seconds} s")
    logger.info("activation job %s succeeded: chip %s is warming", job.pk, job.chip_id)
    return J.SUCCEEDED


def _job_fail(job: ActivationJob, *, status: str, step: str, message: str, actor: Actor,
              screenshot_path: str | None = None) -> str:
    """Finish an in-flight job as failed or timed out; its chip goes back to pending with an alert.

    The chip's `activation_failed` transition counts the attempt; at `MAX_CHIP_ATTEMPTS` the chip is retired,
    its Salvy line cancel is queued (chipfarm.cancel_line, reason "technical-issues") and a critical alert
    raised, all in the transaction that finishes the job.
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
        chip = Chip.objects.select_for_update().get(pk=job.chip_id)
        if chip.status != Chip.Status.ACTIVATING:
            logger.warning("activation job %s %s, but chip %s is %s: left as it is", job.pk, status, chip.pk,
                           chip.status)
            return status
        chip = chip_transition(chip=chip, transition="activation_failed", actor=actor,
                               reason=f"activation job {job.pk} {status} at step {step}")
        alert_raise(
            kind="activation_failed", severity=ChipAlert.Severity.WARNING, chip=chip,
            message=_("Activation of chip %(chip)s failed at step %(step)s (attempt %(attempt)d of %(max)d, "
                      "job %(job)d). Screenshot: %(shot)s. %(message)s")
            % {"chip": chip, "step": step, "attempt": chip.activation_attempts, "max": MAX_CHIP_ATTEMPTS,
               "job": job.pk, "shot": shot or _("none"), "message": message},
            action_taken=str(_("chip back to pending, waiting for a new code")),
        )
        if chip.activation_attempts >= MAX_CHIP_ATTEMPTS:
            _chip_give_up(chip, actor=actor)
    logger.warning("activation job %s %s at step %s (chip %s)", job.pk, status, step, job.chip_id)
    return status


def _chip_give_up(chip: Chip, *, actor: Actor) -> None:
    attempts = chip.activation_attempts
    chip = chip_transition(chip=chip, transition="retire", actor=actor,
                           reason=f"activation failed {attempts} times")
    _send_on_commit(CANCEL_LINE_TASK, kwargs={"chip_id": chip.pk, "reason": CANCEL_LINE_REASON})
    alert_raise(
        kind="activation_gave_up", severity=ChipAlert.Severity.CRITICAL, chip=chip,
        message=_("Chip %(chip)s failed activation %(attempts)d times and was retired; its Salvy line is being "
                  "cancelled (technical-issues).") % {"chip": chip, "attempts": attempts},
        action_taken=str(_("chip retired; Salvy line cancel requested")),
    )


# --- the sweep ------------------------------------------------------------------------------------------------

@dataclass
class SweepResult:
    polls_requeued: list[int] = field(default_factory=list)
    submits_requeued: list[int] = field(default_factory=list)
    timed_out: list[int] = field(default_factory=list)


def jobs_sweep(*, now: datetime | None = None, batch: int = SWEEP_BATCH) -> SweepResult:
    """Revive jobs whose task chain died with a worker (run by beat every minute).

    Submitted or running jobs whose next poll is over `STALE_POLL` overdue get a new poll, or time out when past
    their deadline; queued jobs untouched for `STALE_SUBMIT` get a new submit. Rows are taken with
    `FOR UPDATE SKIP LOCKED` and their due-at moved to now, so two sweeps never revive one job twice.
    """
    now = now or timezone.now()
    result = SweepResult()
    actor = Actor.task(SWEEP_TASK)
    with transaction.atomic():
        stalled = list(
            ActivationJob.objects.select_for_update(skip_locked=True)
            .filter(Q(status__in=ActivationJob.POLLING, next_poll_at__lt=now - STALE_POLL)
                    | Q(status=J.QUEUED, next_poll_at__lt=now - STALE_SUBMIT))
            .order_by("next_poll_at")[:batch]
        )
        for job in stalled:
            if job.status in ActivationJob.POLLING and job.deadline_at and job.deadline_at <= now:
                outcome = _job_fail(job, status=J.TIMED_OUT, step="timeout", actor=actor,
                                    message=f"No result from the activator {int(JOB_TIMEOUT.total_seconds() // 60)} "
                                            f"minutes after submit; its polling had stopped ({job.polls} polls).")
                if outcome != "skipped":
                    result.timed_out.append(job.pk)
            elif job.status in ActivationJob.POLLING:
                result.polls_requeued.append(job.pk)
                _send_on_commit(POLL_TASK, args=[job.pk])
            else:
                result.submits_requeued.append(job.pk)
                _send_on_commit(SUBMIT_TASK, args=[job.pk])
        revived = result.polls_requeued + result.submits_requeued
        if revived:
            ActivationJob.objects.filter(pk__in=revived).update(next_poll_at=now, updated_at=now)
    if stalled:
        logger.warning("activation sweep: polls re-queued %s, submits re-queued %s, timed out %s",
                       result.polls_requeued, result.submits_requeued, result.timed_out)
    return result


# --- operators ------------------------------------------------------------------------------------------------

class JobNotRetryable(DomainError):
    status_code = 409
    code = "job_not_retryable"


def job_retry(*, job_id: int, actor: Actor) -> ActivationJob:
    """Start a new activation of a failed or timed-out job's chip with the same SMS code (admin "retry").

    The chip must still be pending (not retired, not activating again). The new job points at the one it
    retries; the chip's `start_activation` is recorded with the operator as actor.
    """
    with transaction.atomic():
        job = ActivationJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            raise NotFound(_("Activation job %(job)d does not exist.") % {"job": job_id})
        if job.status not in ActivationJob.RETRYABLE:
            raise JobNotRetryable(_("Job %(job)d is %(status)s: only failed or timed-out jobs can be retried.")
                                  % {"job": job.pk, "status": job.status})
        chip = Chip.objects.select_for_update().get(pk=job.chip_id)
        if chip.status != Chip.Status.PENDING:
            raise JobNotRetryable(_("Chip %(chip)s is %(status)s, not pending: job %(job)d cannot be retried.")
                                  % {"chip": chip, "status": chip.status, "job": job.pk})
        chip_transition(chip=chip, transition="start_activation", actor=actor,
                        reason=f"retry of activation job {job.pk}")
        retry = ActivationJob.objects.create(chip=chip, sms_code=job.sms_code, sms_id=job.sms_id, retry_of=job,
                                             next_poll_at=timezone.now())
        _send_on_commit(SUBMIT_TASK, args=[retry.pk])
    logger.info("activation job %s retried as %s by %s:%s", job.pk, retry.pk, actor.kind, actor.id)
    return retry


# --- health ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ActivatorHealth:
    is_up: bool
    body: dict[str, Any]
    message: str = ""


HEALTH_TIMEOUT_SECONDS = 5.0
UP_STATUSES = frozenset({"healthy", "degraded"})  # degraded still activates, slowly


def activator_health() -> ActivatorHealth:
    """The activator's own `/health` body plus its queue size; down when unreachable or unhealthy."""
    timeout = min(HEALTH_TIMEOUT_SECONDS, float(settings.HTTP_TIMEOUT_SECONDS))
    try:
        with ActivatorClient(timeout=timeout) as activator:
            health = activator.health()
            queue = activator.queue()
    except ActivatorError as exc:
        return ActivatorHealth(False, {}, _("The chip activator is unavailable (%(kind)s): %(message)s")
                               % {"kind": exc.kind, "message": exc.message})
    body = {**health, "queue_size": queue.get("size")}
    status = str(health.get("status") or "unknown")
    if status not in UP_STATUSES:
        return ActivatorHealth(False, body, _("The chip activator reports itself %(status)s.") % {"status": status})
    return ActivatorHealth(True, body)
