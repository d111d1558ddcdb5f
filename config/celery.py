"""The Celery app. The beat schedule lives here, in code, in one place (STYLE)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

app = Celery("chipfarm")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Filled in by the issues that own each periodic job; the DatabaseScheduler syncs it into
# django-celery-beat's tables, where the admin can pause and inspect each entry.
app.conf.beat_schedule = {
    "check-instances": {"task": "instances.check_instances", "schedule": 60.0},
}
