"""The Celery app. The beat schedule lives here, in code, in one place (STYLE)."""

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

app = Celery("chipfarm")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Filled in by the issues that own each periodic job; the DatabaseScheduler syncs it into
# django-celery-beat's tables, where the admin can pause and inspect each entry.
app.conf.beat_schedule = {
    "sweep-activation-jobs": {"task": "activation.sweep_jobs", "schedule": 60.0},
    "orchestrator-cycle": {"task": "chipfarm.run_cycle", "schedule": 60.0},
    "check-instances": {"task": "instances.check_instances", "schedule": 60.0},
    "deliver-notifications": {"task": "chips.deliver_notifications", "schedule": 30.0},
    "sweep-stuck-provisioning": {"task": "chipfarm.sweep_provisioning", "schedule": 300.0},
    "reset-usage-counters": {"task": "instances.reset_counters", "schedule": crontab(minute=1)},
    "prune-pool-snapshots": {"task": "chipfarm.prune_snapshots", "schedule": crontab(hour=4, minute=17)},
}
