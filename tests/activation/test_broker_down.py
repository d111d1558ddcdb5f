"""Enqueueing never blocks a request: with Redis down, /webhooks/salvy answers fast and the job runs later."""

from __future__ import annotations

import json
import time

import pytest

from activation import services
from activation.models import ActivationJob
from activation.signing import signed_headers
from chips.models import Chip
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


@pytest.mark.integration
def test_the_salvy_webhook_answers_within_2_s_with_redis_down_and_the_job_runs_once_it_is_back(
        client, settings, activation_worker, routed_to_worker, live_server, fake_salvy, make_salvy_chip,
        fake_evolution):
    """The request commits the job and gives up on the publish; once Redis is back, beat's sweep re-queues the
    stalled job through the real broker and a real worker submits it to the fake activator, which links the chip."""
    from config.celery import app
    from instances.services import instance_create

    activation_worker.fake.reset()
    activation_worker.fake.succeed_after(1)
    fake_evolution.auto_qr = True
    settings.PUBLIC_BASE_URL = live_server.url
    settings.SALVY_WEBHOOK_SECRET = SALVY_SECRET
    chip = make_salvy_chip()
    instance_create(chip=chip, name=chip.instance_name)  # provisioning's part: the session the activator links
    body = json.dumps(sms_envelope(chip, sms_id="sms-down", code="112233")).encode()
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
    time.sleep(1)
    assert activation_worker.fake.jobs == []  # the submit task never reached the worker

    # Redis is back and the job has waited past STALE_SUBMIT (its due-at moved back, as time would move it).
    ActivationJob.objects.filter(pk=job.pk).update(next_poll_at=job.next_poll_at - services.STALE_SUBMIT * 2)
    result = services.jobs_sweep()  # beat's sweep: its submit goes through the real broker to the real worker
    assert result.submits_requeued == [job.pk]

    deadline = time.monotonic() + 30
    while Chip.objects.get(pk=chip.pk).status != Chip.Status.WARMING and time.monotonic() < deadline:
        time.sleep(0.2)
    chip.refresh_from_db()
    job.refresh_from_db()
    assert chip.status == Chip.Status.WARMING, activation_worker.log.read_text()[-3000:]
    assert (job.status, job.attempts) == ("succeeded", 1)
    [remote] = activation_worker.fake.jobs
    assert remote.codigo_sms == "112233" and remote.numero == chip.phone.removeprefix("+55")
