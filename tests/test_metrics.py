"""GET /metrics (Prometheus text) and the cluster-wide Redis counters behind it."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from celery.signals import task_failure
from django.utils import timezone

from chips.models import Chip
from config import counters
from config.celery import app
from instances.models import ChipCapacity
from instances.routing import RoutingRefused, contact_route
from instances.services import instance_register, sending_pause
from tests.factories import chip_in_state

pytestmark = pytest.mark.django_db
URL = "/metrics"
# A Tuesday, 10:00 in São Paulo: inside business hours.
BUSINESS_TIME = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? -?[0-9.e+-]+$')


@pytest.fixture
def dead_redis(settings):
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"}}


def _samples(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def _production_chip() -> Chip:
    chip = chip_in_state(status=Chip.Status.ACTIVE)
    instance_register(chip=chip)
    ChipCapacity.objects.create(chip=chip)
    return chip


def test_gauges_reflect_the_rows(client, isolated_cache):
    for _ in range(3):
        chip_in_state(status=Chip.Status.ACTIVE)
    chip_in_state(status=Chip.Status.WARMING, warming_started_at=timezone.now() - timedelta(days=3))
    chip_in_state(status=Chip.Status.WARMING, warming_started_at=timezone.now() - timedelta(days=5))
    chip_in_state(status=Chip.Status.BANNED)
    with time_machine.travel(timezone.now() - timedelta(days=8)):
        chip_in_state(status=Chip.Status.BANNED)  # banned 8 days ago: outside the 7-day window

    response = client.get(URL)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = response.content.decode()
    assert 'chipfarm_chips{state="active"} 3' in text.splitlines()
    samples = _samples(text)
    assert samples['chipfarm_chips{state="warming"}'] == 2
    assert samples['chipfarm_chips{state="banned"}'] == 2
    assert samples['chipfarm_chips{state="retired"}'] == 0
    assert samples["chipfarm_chips_banned_7d"] == 1
    assert samples['chipfarm_warming_chips{phase="rest"}'] == 2
    assert samples['chipfarm_warming_chips{phase="operation"}'] == 0
    assert samples["chipfarm_warming_days_avg"] == pytest.approx(4.0, abs=0.01)
    assert samples["chipfarm_sending_paused"] == 0
    assert samples["chipfarm_counters_up"] == 1


def test_every_line_is_valid_exposition_text(client, isolated_cache):
    chip_in_state(status=Chip.Status.READY)
    counters.incr("webhook_events", ('we"ird\\event', "processed"))

    text = client.get(URL).content.decode()

    assert text.endswith("\n")
    families = set()
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            _, _, name, kind = line.split(" ")
            assert kind in ("gauge", "counter") and name not in families
            families.add(name)
        elif not line.startswith("# HELP"):
            assert SAMPLE.match(line), line
    assert 'chipfarm_webhook_events_total{event="we\\"ird\\\\event",outcome="processed"} 1' in text


def test_route_decisions_are_counted_by_outcome(client, isolated_cache):
    with time_machine.travel(BUSINESS_TIME, tick=True):
        _production_chip()
        contact_route(contact="+5511988887777")
        contact_route(contact="+5511988887777")
        sending_pause(reason="incident", by="test")
        with pytest.raises(RoutingRefused):
            contact_route(contact="+5511988886666")

    samples = _samples(client.get(URL).content.decode())

    assert samples['chipfarm_route_decisions_total{outcome="routed"}'] == 2
    assert samples['chipfarm_route_decisions_total{outcome="paused"}'] == 1
    assert samples["chipfarm_sending_paused"] == 1


def test_webhook_events_are_counted_by_event_and_outcome(client, settings, isolated_cache):
    chip = _production_chip()

    def post(event: str, instance: str) -> None:
        body = {"event": event, "instance": instance, "data": {"state": "open"}}
        response = client.post("/webhooks/evolution", data=json.dumps(body), content_type="application/json",
                               headers={"X-Webhook-Secret": settings.EVOLUTION_WEBHOOK_SECRET})
        assert response.status_code == 200

    post("connection.update", chip.instance_name)
    post("connection.update", "no-such-instance")
    post("contacts.update", chip.instance_name)  # not handled: counted as "other"

    samples = _samples(client.get(URL).content.decode())

    assert samples['chipfarm_webhook_events_total{event="connection.update",outcome="processed"}'] == 1
    assert samples['chipfarm_webhook_events_total{event="connection.update",outcome="unknown_instance"}'] == 1
    assert samples['chipfarm_webhook_events_total{event="other",outcome="ignored"}'] == 1


def test_task_failures_are_counted_by_task(client, isolated_cache):
    task = app.tasks["config.heartbeat"]
    for _ in range(2):
        task_failure.send(sender=task, task_id=uuid.uuid4().hex, exception=RuntimeError("boom"))

    samples = _samples(client.get(URL).content.decode())

    assert samples['chipfarm_task_failures_total{task="config.heartbeat"}'] == 2


def test_counters_add_up_across_calls(isolated_cache):
    counters.incr("route_decisions", "routed")
    counters.incr("route_decisions", "routed", amount=4)
    counters.incr("route_decisions", "no_capacity")

    assert counters.read("route_decisions") == {"routed": 5, "no_capacity": 1}
    assert counters.read("never_written") == {}


def test_a_redis_outage_breaks_neither_routing_nor_metrics(client, dead_redis):
    with time_machine.travel(BUSINESS_TIME, tick=True):
        chip = _production_chip()
        counters.incr("route_decisions", "routed")  # does not raise
        decision = contact_route(contact="+5511988887777")  # counted nowhere, but routed
    assert decision.chip_id == chip.pk
    with pytest.raises(Exception):  # noqa: B017 - whatever the client raises, read() reports it
        counters.read("route_decisions")

    response = client.get(URL)

    assert response.status_code == 200
    samples = _samples(response.content.decode())
    assert samples['chipfarm_chips{state="active"}'] == 1
    assert samples["chipfarm_counters_up"] == 0


def test_a_metrics_token_requires_the_bearer_header(client, settings, isolated_cache):
    settings.METRICS_TOKEN = "s3cret-metrics-token"

    assert client.get(URL).status_code == 401
    assert client.get(URL, headers={"Authorization": "Bearer wrong"}).status_code == 401
    response = client.get(URL, headers={"Authorization": "Bearer s3cret-metrics-token"})
    assert response.status_code == 200 and b"chipfarm_chips{" in response.content
