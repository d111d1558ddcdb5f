"""Enqueueing never blocks a request: with Redis down, /webhooks/salvy answers fast and the job runs later."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from activation import services
from activation.models import ActivationJob
from activation.signing import signed_headers
from tests.activation.conftest import SALVY_SECRET, URL, sms_envelope

pytestmark = pytest.mark.django_db(transaction=True)
DEAD = "redis://127.0.0.1:6399/0"  # nothing listens there


def _point_redis_at(url: str, settings) -> None:
    from django.core.cache import caches

    from config.celery import app

    app.conf.broker_url = url
    # The connection and producer pools are looked up again for the new URL (kombu keeps one pool per URL; closing
    # one would break every later user of that URL in this process).
    app._pool = None
    app.amqp._producer_pool = None
    settings.CACHES = {**settings.CACHES, "default": {**settings.CACHES["default"], "LOCATION": url}}
    caches["default"].close()


def test_the_salvy_webhook_answers_within_2_s_with_redis_down_and_the_job_runs_once_it_is_back(
        client, settings, pending_chip, monkeypatch):
    from config.celery import app

    settings.SALVY_WEBHOOK_SECRET = SALVY_SECRET
    body = json.dumps(sms_envelope(pending_chip, sms_id="sms-down", code="112233")).encode()
    alive = app.conf.broker_url
    _point_redis_at(DEAD, settings)  # the broker and the cache both point at a Redis that is not there
    try:
        started = time.monotonic()
        response = client.post(URL, data=body, content_type="application/json",
                               headers=signed_headers(SALVY_SECRET, "msg_down", body))
        elapsed = time.monotonic() - started
    finally:
        _point_redis_at(alive, settings)

    assert response.status_code == 200 and response.json()["status"] == "job_created"
    assert elapsed < 2.0, elapsed
    job = ActivationJob.objects.get()
    assert job.status == "queued" and job.attempts == 0  # committed: nothing was lost with the publish

    sent: list[tuple] = []
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **kw: sent.append((name, tuple(args or ()))))
    later = timezone.now() + services.STALE_SUBMIT + timedelta(seconds=5)
    result = services.jobs_sweep(now=later)  # Redis is back: beat's sweep finds the stalled job

    assert result.submits_requeued == [job.pk] and sent == [(services.SUBMIT_TASK, (job.pk,))]
