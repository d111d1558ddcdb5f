"""Enqueueing never blocks (W2 3/7): with Redis down, /webhooks/evolution stores a message event and answers well
under 2 s; the drain's kick is given up (the 15 s sweep catches up once Redis is back)."""

from __future__ import annotations

import json
import socket
import time

import pytest
from django.urls import resolve

from instances import inbox
from instances.models import WebhookReceipt
from tests.instances.conftest import payload, production_chip

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/webhooks/evolution"
REFUSED = "redis://127.0.0.1:6399/0"  # nothing listens there (as tests/activation/test_broker_down.py)


@pytest.fixture
def silent_redis():
    """A Redis address that takes the connection and never answers (a hung server, a black-holed network): the
    case a refused port does not show, where only a socket timeout ends the wait."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # the kernel completes the handshakes; nobody ever reads
    yield f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    sock.close()


def _point_cache_at(url: str, settings) -> None:
    from django.core.cache import caches

    settings.CACHES = {**settings.CACHES, "default": {**settings.CACHES["default"], "LOCATION": url}}
    caches["default"].close()


@pytest.mark.parametrize("down", ["refused", "silent"])
def test_the_evolution_webhook_answers_well_under_2_s_with_redis_down(client, settings, down, request,
                                                                      monkeypatch):
    from config import counters
    from config.celery import app

    settings.MAX_CHIPS_ACTIVE = 1000
    chip = production_chip()
    dead = REFUSED if down == "refused" else request.getfixturevalue("silent_redis")
    alive_cache, alive_broker = settings.CACHES["default"]["LOCATION"], app.conf.broker_url
    # No back-off left by another test, and none left behind for the next (restored at teardown).
    monkeypatch.setattr(inbox, "_kick_skip_until", 0.0)
    monkeypatch.setattr(counters, "_skip_until", {})
    resolve(URL)  # a running pool: its URLconf is imported (the first request of a process imports it)
    inbox.instance_id_for(chip.instance_name)  # and the name → id cache is warm
    _point_cache_at(dead, settings)
    app.conf.broker_url, app._pool, app.amqp._producer_pool = dead, None, None
    timings = []
    try:
        for n in range(3):  # the first call meets the outage; the next ones must not wait for it either
            envelope = payload("messages_upsert_text", instance=chip.instance_name)
            envelope["data"]["key"]["id"] = f"3ADOWN{n}"
            started = time.monotonic()
            response = client.post(URL, data=json.dumps(envelope), content_type="application/json",
                                   headers={"X-Webhook-Secret": settings.EVOLUTION_WEBHOOK_SECRET})
            timings.append(time.monotonic() - started)
            assert response.status_code == 200 and response.json()["status"] == "accepted", response.content
    finally:
        _point_cache_at(alive_cache, settings)
        app.conf.broker_url, app._pool, app.amqp._producer_pool = alive_broker, None, None

    assert max(timings) < 1.0, timings  # "well under 2 s" (Evolution's own timeout is longer; Svix's is 15 s)
    assert WebhookReceipt.objects.filter(applied_at__isnull=True).count() == 3  # stored: the sweep will drain them
