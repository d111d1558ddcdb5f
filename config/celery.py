"""The Celery app. The beat schedule lives here, in code, in one place (STYLE)."""

import os

from celery import Celery
from celery.schedules import crontab
from celery.signals import setup_logging, task_failure, task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

app = Celery("chipfarm")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Celery's Django fixup closes the worker's database connection around every task unless this is set: every
# task then paid a new PostgreSQL session (a fork of a backend, authentication, a cold catalogue cache) before
# its first query — 71 sessions for one bench round of 2,200 webhook events (W2 7/7). With it the fixup keeps
# the connection, and Django's own rule (CONN_MAX_AGE, CONN_HEALTH_CHECKS) decides, as it does per request.
app.conf.update(CELERY_DB_REUSE_MAX=10_000)
app.autodiscover_tasks()
from config import heartbeat  # noqa: E402, F401 - registers "config.heartbeat" (config is not an app)

# Filled in by the issues that own each periodic job; the DatabaseScheduler syncs it into
# django-celery-beat's tables, where the admin can pause and inspect each entry.
app.conf.beat_schedule = {
    "sweep-activation-jobs": {"task": "activation.sweep_jobs", "schedule": 60.0},
    "orchestrator-cycle": {"task": "chipfarm.run_cycle", "schedule": 60.0},
    "check-instances": {"task": "instances.check_instances", "schedule": 60.0},
    # The webhook kicks a drain per burst of message events; this re-kicks a shard whose kick was lost.
    "sweep-gateway-events": {"task": "instances.sweep_gateway_events", "schedule": 15.0, "options": {"expires": 30}},
    "deliver-notifications": {"task": "chips.deliver_notifications", "schedule": 30.0},
    # Webhook retries come due here; a tick no worker took within 30 s is dropped (the next one covers it).
    "sweep-webhook-deliveries": {"task": "outbox.sweep", "schedule": 15.0, "options": {"expires": 30}},
    "sweep-stuck-provisioning": {"task": "chipfarm.sweep_provisioning", "schedule": 300.0},
    "reset-usage-counters": {"task": "instances.reset_counters", "schedule": crontab(minute=1)},
    "warmer-plan-day": {"task": "warmer.plan_day", "schedule": 1800.0},
    "warmer-dispatch": {"task": "warmer.dispatch", "schedule": 60.0},
    "warmer-recompute-recent-trust": {"task": "warmer.recompute_recent_trust", "schedule": 300.0},
    "warmer-recompute-all-trust": {"task": "warmer.recompute_trust", "schedule": crontab(hour=9, minute=30)},
    "prune-pool-snapshots": {"task": "chipfarm.prune_snapshots", "schedule": crontab(hour=4, minute=17)},
    "prune-webhook-receipts": {"task": "instances.prune_receipts", "schedule": crontab(hour=4, minute=27)},
    "heal-webhook-drift": {"task": "instances.heal_webhooks", "schedule": crontab(hour=5, minute=7)},
    "sweep-releases": {"task": "chipfarm.sweep_releases", "schedule": 60.0},
    "sweep-pipeline": {"task": "chipfarm.sweep_pipeline", "schedule": 300.0},
    # /health/deep's "beat" check; a tick no worker ran within a minute is dropped, not run late.
    "beat-heartbeat": {"task": "config.heartbeat", "schedule": 30.0, "options": {"expires": 60}},
}


@setup_logging.connect
def _django_logging(**kwargs) -> None:
    """Workers and beat log through Django's LOGGING (JSON, request ids, masking), not Celery's handlers."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


@task_failure.connect
def _count_task_failure(sender=None, **kwargs) -> None:
    """task_failures{task} for /metrics (in Redis, shared by every worker; never raises)."""
    from config import counters

    counters.incr("task_failures", getattr(sender, "name", None) or "unknown")


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(sender=None, state: str | None = None, **kwargs) -> None:
    """Around each task a worker runs, what Django does around each request: drop a connection past
    CONN_MAX_AGE or left unusable by an error, and check a kept one before its first query (CONN_HEALTH_CHECKS).
    After a task that did not succeed (`state`, task_postrun's), its connections are closed: what it may have left
    on the session — an advisory lock a time limit cut off before its release — goes with them, as it did when
    every task closed its connection. Not for a task run in process (`apply()`, eager): that one runs on its
    caller's connection, perhaps inside the caller's transaction, which it must not close (as Celery's own fixup,
    and Django's test client)."""
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    from django.db import close_old_connections, connections

    if state is not None and state != "SUCCESS":
        connections.close_all()
    else:
        close_old_connections()
