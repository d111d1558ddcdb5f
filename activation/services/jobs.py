"""An activation job's chain: submit it to the activator, poll it, revive it when its chain dies, retry it.

    activation.submit_job ─▶ job_submit ─▶ POST /activate ─▶ job submitted ─countdown 10 s─▶ activation.poll_job
    activation.poll_job ─▶ job_poll ─▶ GET /activate/{id} ─▶ again in ≤ 10 s | succeeded | failed | timed_out
    activation.sweep_jobs (beat, every minute) ─▶ jobs_sweep ─▶ re-queue chains that died with a worker

Every step is one short call followed by a compare-and-set on the job row, so a task delivered twice, a sweep
racing a live chain, or two workers on one job all end with one submit per attempt and one finisher
(activation.services.finishing). Nothing here sleeps or loops waiting on the activator: waiting is a countdown of
at most `MAX_COUNTDOWN` seconds, and "later" beyond that is the job's due-at (`next_poll_at`) read by the sweep.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from activation.client import ActivationStatus, ActivatorError
from activation.models import ActivationJob
from activation.services.finishing import job_fail, job_succeed
from activation.services.queueing import (
    MAX_COUNTDOWN,
    POLL_TASK,
    SUBMIT_TASK,
    SWEEP_TASK,
    activator_client,
    send_on_commit,
)
from chips.models import Chip, ChipAlert
from chips.services import Actor, alert_raise, chip_transition
from common.exceptions import DomainError, NotFound
from common.texts import Text
from instances.linking import link_start, link_url
from instances.models import InstanceLink
from instances.services import instance_register

logger = logging.getLogger(__name__)

J = ActivationJob.Status

POLL_INTERVAL = 10  # seconds between status polls (the original design's cadence)
SUBMIT_BACKOFF = (5, 10, 20, 40)  # seconds before submit attempts 2, 3, 4 and 5
MAX_SUBMIT_ATTEMPTS = len(SUBMIT_BACKOFF) + 1
JOB_TIMEOUT = timedelta(minutes=10)  # from submit; the contract's "gives up after 10 minutes"
# A task that arrives this much before its job's due-at is a stray duplicate of a live chain and is dropped.
DUE_SLACK = timedelta(seconds=2)
STALE_POLL = timedelta(seconds=60)  # a poll this overdue belongs to a chain that died
STALE_SUBMIT = timedelta(minutes=2)  # a queued job untouched this long lost its submit task
SWEEP_BATCH = 200


# --- submitting -----------------------------------------------------------------------------------------------

#: A link handed to the activator lives as long as the activation may (plus the time it may wait in its queue).
LINK_VALID_FOR = JOB_TIMEOUT + timedelta(minutes=5)
#: After the activator refused our key (401/403), submissions wait this long before trying again.
UNAUTHORIZED_PAUSE = timedelta(minutes=5)
PAUSE_KEY = "activation:submissions_paused_until"


def evolution_qr_url(chip: Chip) -> str:
    """The link the activator fetches the QR from: served by the pool itself, unique to this activation, carrying
    an unguessable token and no gateway credential (contracts/chip-activator.md, last section). The field keeps the
    planning documents' name."""
    instance = instance_register(chip=chip)
    link = link_start(instance=instance, purpose=InstanceLink.Purpose.ACTIVATION, valid_for=LINK_VALID_FOR,
                      requested_by="activation")
    return link_url(link)


def submissions_paused(now: datetime) -> bool:
    """Whether the activator refused our key lately (a configuration problem): submissions wait, no job fails."""
    try:
        until = cache.get(PAUSE_KEY)
    except Exception:  # Redis down: try, and let the activator say
        return False
    return bool(until) and datetime.fromisoformat(until) > now


def _key_refused(exc: ActivatorError, now: datetime) -> None:
    """401/403 from the activator, on a submit or a poll: our key is wrong. One configuration alert (deduplicated)
    and submissions paused; call inside the transaction that parks the job."""
    alert_raise(kind="activator_unauthorized", severity=ChipAlert.Severity.CRITICAL,
                dedup_key="config:activator_unauthorized",
                message=Text("alert.activator_unauthorized", status=exc.status_code),
                action_taken=Text("action.activator_paused", minutes=int(UNAUTHORIZED_PAUSE.total_seconds() // 60)))
    try:
        cache.set(PAUSE_KEY, (now + UNAUTHORIZED_PAUSE).isoformat(), timeout=int(UNAUTHORIZED_PAUSE.total_seconds()))
    except Exception:
        logger.warning("could not record the submission pause in the cache")


def _pause_submissions(job: ActivationJob, exc: ActivatorError, now: datetime) -> str:
    """401/403 on a submit: a configuration alert, submissions paused, and the attempt given back — it must not
    burn the chip's SMS codes nor retire it."""
    with transaction.atomic():
        ActivationJob.objects.filter(pk=job.pk, status=J.QUEUED).update(
            attempts=F("attempts") - 1, next_poll_at=now + UNAUTHORIZED_PAUSE, updated_at=now,
            message=f"waiting: the activator refused our key ({exc.status_code})"[:500])
        _key_refused(exc, now)
    logger.error("activation job %s: the activator refused our key; submissions paused", job.pk)
    return "paused"


def _park_poll(job: ActivationJob, exc: ActivatorError, deadline: datetime, now: datetime) -> str:
    """401/403 on a poll: the same alert and pause as a submit's, and the job parked, not failed. It is polled
    again in `MAX_COUNTDOWN` s and its deadline moves by as much (and never before a sweep could revive a chain
    that died while parked): the time the pool cannot read the activator is not the activation's, so a wrong key
    never times a job out nor counts an attempt. Once the key works, the next poll goes on with the time left."""
    park = timedelta(seconds=MAX_COUNTDOWN)
    with transaction.atomic():
        moved = ActivationJob.objects.filter(pk=job.pk, status=job.status, polls=job.polls + 1).update(
            next_poll_at=now + park, deadline_at=max(deadline + park, now + park + 2 * STALE_POLL), updated_at=now,
            message=f"waiting: the activator refused our key ({exc.status_code})"[:500])
        if moved:
            send_on_commit(POLL_TASK, args=[job.pk], countdown=MAX_COUNTDOWN)
        _key_refused(exc, now)
    logger.error("activation job %s: the activator refused our key on a poll; the job waits", job.pk)
    return "paused" if moved else "skipped"


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
    if submissions_paused(now):
        ActivationJob.objects.filter(pk=job.pk, status=J.QUEUED).update(
            attempts=F("attempts") - 1, next_poll_at=now + timedelta(seconds=MAX_COUNTDOWN), updated_at=now)
        return "paused"
    attempt = job.attempts + 1
    actor = Actor.task(SUBMIT_TASK)
    chip = job.chip
    if chip.status != Chip.Status.ACTIVATING:
        # An operator moved the chip (retired it, say) while the job waited: do not register the number.
        return job_fail(job=job, status=J.FAILED, step="submit", actor=actor,
                        message=f"Not submitted: the chip is {chip.status}, no longer activating.")
    try:
        activation_id = activator_client().submit(number=chip.phone or "", sms_code=job.sms_code,
                                                  evolution_qr_url=evolution_qr_url(chip))
    except ValueError as exc:  # the chip's number is not a Brazilian number: no retry can fix it
        return job_fail(job=job, status=J.FAILED, step="submit", message=str(exc), actor=actor)
    except ActivatorError as exc:
        now = timezone.now()
        if exc.kind == "unauthorized":
            return _pause_submissions(job, exc, now)
        if exc.retryable and attempt < MAX_SUBMIT_ATTEMPTS:
            delay = SUBMIT_BACKOFF[attempt - 1]
            with transaction.atomic():
                moved = ActivationJob.objects.filter(pk=job.pk, status=J.QUEUED, attempts=attempt).update(
                    next_poll_at=now + timedelta(seconds=delay), updated_at=now,
                    message=f"submit attempt {attempt} failed ({exc.kind}): {exc.message}"[:500],
                )
                if moved:
                    send_on_commit(SUBMIT_TASK, args=[job.pk], countdown=delay)
            logger.info("activation job %s: submit attempt %s failed (%s); next in %s s", job.pk, attempt, exc.kind,
                        delay)
            return "retry"
        return job_fail(job=job, status=J.FAILED, step="submit", actor=actor,
                        message=f"The activator refused the job after {attempt} attempt(s) ({exc.kind}): "
                                f"{exc.message}")
    now = timezone.now()
    with transaction.atomic():
        moved = ActivationJob.objects.filter(pk=job.pk, status=J.QUEUED, attempts=attempt).update(
            status=J.SUBMITTED, activator_id=activation_id[:64], submitted_at=now, deadline_at=now + JOB_TIMEOUT,
            next_poll_at=now + timedelta(seconds=POLL_INTERVAL), message="", updated_at=now,
        )
        if moved:
            send_on_commit(POLL_TASK, args=[job.pk], countdown=POLL_INTERVAL)
    if not moved:
        logger.warning("activation job %s changed while it was submitted; activator id %s is not followed", job.pk,
                       activation_id)
        return "skipped"
    logger.info("activation job %s submitted as %s", job.pk, activation_id)
    return "submitted"


# --- polling --------------------------------------------------------------------------------------------------

def job_poll(*, job_id: int) -> str:
    """Ask the activator once how a submitted job is doing, then finish the job or queue the next poll.

    Returns submitted | running | succeeded | failed | timed_out | paused | skipped. Success: the chip starts
    warming. Failure: the chip goes back to pending with an alert naming the step and the screenshot. Still queued
    or running (or the activator did not answer): the next poll is queued in at most `POLL_INTERVAL` s, until the
    deadline, when the job times out. Our key refused (401/403): parked, see `_park_poll`. A finished job, or a
    poll that is not due (a stray duplicate of a live chain), is skipped.
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
        state = activator_client().status(job.activator_id)
    except ActivatorError as exc:
        if exc.kind == "not_found":
            return job_fail(job=job, status=J.FAILED, step="lost", actor=actor,
                            message=f"The activator does not know activation {job.activator_id} any more.")
        if exc.kind == "unauthorized":
            return _park_poll(job, exc, job.deadline_at or (job.submitted_at or job.created_at) + JOB_TIMEOUT,
                              timezone.now())
        error = f"{exc.kind}: {exc.message}"
        logger.warning("activation job %s: status poll failed (%s)", job.pk, error)
    if state is not None and state.succeeded:
        return job_succeed(job=job, state=state, actor=actor)
    if state is not None and state.status == "failed":
        return job_fail(job=job, status=J.FAILED, step=state.step or "unknown",
                        screenshot_path=state.screenshot_path, message=state.message, actor=actor)
    now = timezone.now()
    deadline = job.deadline_at or (job.submitted_at or job.created_at) + JOB_TIMEOUT
    if now >= deadline:
        last = state.status if state is not None else error
        return job_fail(job=job, status=J.TIMED_OUT, step="timeout", actor=actor,
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
            send_on_commit(POLL_TASK, args=[job.pk], countdown=countdown)
    return str(updates.get("status", job.status)) if moved else "skipped"


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
                outcome = job_fail(job=job, status=J.TIMED_OUT, step="timeout", actor=actor,
                                   message=f"No result from the activator {int(JOB_TIMEOUT.total_seconds() // 60)} "
                                           f"minutes after submit; its polling had stopped ({job.polls} polls).")
                if outcome != "skipped":
                    result.timed_out.append(job.pk)
            elif job.status in ActivationJob.POLLING:
                result.polls_requeued.append(job.pk)
                send_on_commit(POLL_TASK, args=[job.pk])
            else:
                result.submits_requeued.append(job.pk)
                send_on_commit(SUBMIT_TASK, args=[job.pk])
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
        send_on_commit(SUBMIT_TASK, args=[retry.pk])
    logger.info("activation job %s retried as %s by %s:%s", job.pk, retry.pk, actor.kind, actor.id)
    return retry
