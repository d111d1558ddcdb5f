"""Writes for activation (DESIGN §6): the Salvy SMS that starts it, the activator job that carries it out.

    sms.received ─▶ sms_receive ─▶ chip pending→activating + job queued ─on commit─▶ activation.submit_job
    activation.submit_job ─▶ job_submit ─▶ POST /activate ─▶ job submitted ─countdown 10 s─▶ activation.poll_job
    activation.poll_job ─▶ job_poll ─▶ GET /activate/{id} ─▶ again in ≤ 10 s | succeeded | failed | timed_out
    activation.sweep_jobs (beat, every minute) ─▶ jobs_sweep ─▶ re-queue chains that died with a worker

- `sms`: receiving an `sms.received` delivery (parsed by activation.salvy, the one Salvy SMS parser);
- `jobs`: a job's chain — submit, poll, the sweep that revives dead chains, the operator's retry;
- `finishing`: a job's success or failure, and the chip's retirement after its last failed attempt;
- `health`: the activator's health for GET /health/chip-activator;
- `queueing`: the task names, queueing a task after commit, the process's activator client.

The names below are re-exported so callers may keep `from activation import services`; a test that patches one
patches the module that owns it (`activation.services.jobs.POLL_INTERVAL`, say), where it is read.
"""

from activation.salvy import InboundSms, SalvyEvent, salvy_event_parse, salvy_sms_parse, whatsapp_code
from activation.services.finishing import MAX_CHIP_ATTEMPTS
from activation.services.health import HEALTH_TIMEOUT_SECONDS, UP_STATUSES, ActivatorHealth, activator_health
from activation.services.jobs import (
    DUE_SLACK,
    JOB_TIMEOUT,
    MAX_SUBMIT_ATTEMPTS,
    PAUSE_KEY,
    POLL_INTERVAL,
    STALE_POLL,
    STALE_SUBMIT,
    SUBMIT_BACKOFF,
    SWEEP_BATCH,
    JobNotRetryable,
    SweepResult,
    evolution_qr_url,
    job_poll,
    job_retry,
    job_submit,
    jobs_sweep,
)
from activation.services.queueing import (
    CANCEL_LINE_REASON,
    CANCEL_LINE_TASK,
    MAX_COUNTDOWN,
    POLL_TASK,
    SUBMIT_TASK,
    SWEEP_TASK,
)
from activation.services.sms import WEBHOOK_ACTOR, SmsOutcome, sms_receive

__all__ = [
    "CANCEL_LINE_REASON",
    "CANCEL_LINE_TASK",
    "DUE_SLACK",
    "HEALTH_TIMEOUT_SECONDS",
    "JOB_TIMEOUT",
    "MAX_CHIP_ATTEMPTS",
    "MAX_COUNTDOWN",
    "MAX_SUBMIT_ATTEMPTS",
    "POLL_INTERVAL",
    "POLL_TASK",
    "STALE_POLL",
    "STALE_SUBMIT",
    "SUBMIT_BACKOFF",
    "SUBMIT_TASK",
    "SWEEP_BATCH",
    "SWEEP_TASK",
    "UP_STATUSES",
    "WEBHOOK_ACTOR",
    "ActivatorHealth",
    "InboundSms",
    "JobNotRetryable",
    "SalvyEvent",
    "SmsOutcome",
    "SweepResult",
    "activator_health",
    "PAUSE_KEY",
    "evolution_qr_url",
    "job_poll",
    "job_retry",
    "job_submit",
    "jobs_sweep",
    "salvy_event_parse",
    "salvy_sms_parse",
    "sms_receive",
    "whatsapp_code",
]
