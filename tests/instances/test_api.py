"""/api/v1/route, /api/v1/messages, /api/v1/pool/pause|resume and /health/instances over HTTP."""

from __future__ import annotations

import pytest

from instances.models import ChipCapacity, OutboundMessage

pytestmark = pytest.mark.django_db


@pytest.fixture
def linked_chip(make_production_chip, fake_evolution):
    chip = make_production_chip(per_hour=20)
    fake_evolution.add_instances([chip.instance_name], state="open")
    return chip


def test_route_returns_the_chip_and_reserves(api, linked_chip, business_hours):
    response = api.post("/api/v1/route", {"contact": "(11) 98888-7777"})
    assert response.status_code == 200, response.content
    assert response.json() == {"chip_id": linked_chip.pk, "phone": linked_chip.phone,
                               "instance": linked_chip.instance_name, "binding": "new"}
    assert ChipCapacity.objects.get(chip=linked_chip).hour_count == 1


@pytest.mark.parametrize("contact", ["", "abc", "123", "+55 11 1234", "+1 202 555 01"])
def test_route_bad_contact_is_422_naming_the_field(api, linked_chip, business_hours, contact):
    response = api.post("/api/v1/route", {"contact": contact})
    assert response.status_code == 422
    assert response.json()["field"] == "contact"
    assert ChipCapacity.objects.get(chip=linked_chip).hour_count == 0


def test_route_refusals_are_503_with_code_and_retry_after(api, linked_chip):
    import time_machine

    from tests.instances.conftest import BUSINESS_TIME

    with time_machine.travel(BUSINESS_TIME.replace(hour=2), tick=False):  # 23:00 in São Paulo
        response = api.post("/api/v1/route", {"contact": "11988887777"})
    assert response.status_code == 503
    assert response.json()["code"] == "outside_business_hours"
    assert int(response["Retry-After"]) == 9 * 3600

    with time_machine.travel(BUSINESS_TIME, tick=False):
        assert api.post("/api/v1/pool/pause", {"reason": "maintenance"}).json()["paused"] is True
        paused = api.post("/api/v1/route", {"contact": "11988887777"})
        assert paused.status_code == 503 and paused.json()["code"] == "paused"
        assert api.post("/api/v1/pool/resume", {}).json()["paused"] is False
        assert api.post("/api/v1/route", {"contact": "11988887777"}).status_code == 200


def test_pause_needs_a_reason(api):
    response = api.post("/api/v1/pool/pause", {})
    assert response.status_code == 422 and response.json()["field"] == "reason"


def test_send_once_and_replay_the_first_result(api, linked_chip, fake_evolution, business_hours):
    body = {"contact": "+5511988887777", "text": "Olá!", "idempotency_key": "order-1"}
    first = api.post("/api/v1/messages", body)
    assert first.status_code == 201, first.content
    data = first.json()
    assert data["status"] == "sent" and data["evolution_message_id"].startswith("3EB0")
    assert data["chip_id"] == linked_chip.pk

    for _ in range(3):
        again = api.post("/api/v1/messages", body)
        assert again.status_code == 201 and again.json() == data
    assert len(fake_evolution.sent_messages) == 1
    assert fake_evolution.sent_messages[0]["number"] == "5511988887777"
    assert OutboundMessage.objects.count() == 1
    assert ChipCapacity.objects.get(chip=linked_chip).hour_count == 1


def test_a_failed_send_is_not_retried_and_replays_as_failed(api, linked_chip, fake_evolution, business_hours):
    fake_evolution.fail_next(1, 500)
    body = {"contact": "+5511988887777", "text": "Olá!", "idempotency_key": "order-2"}
    first = api.post("/api/v1/messages", body)
    assert first.status_code == 502 and first.json()["status"] == "failed"
    assert api.post("/api/v1/messages", body).json() == first.json()
    assert fake_evolution.request_count("sendText") == 1
    assert fake_evolution.sent_messages == []


def test_reusing_a_key_for_another_text_is_409(api, linked_chip, business_hours):
    api.post("/api/v1/messages", {"contact": "+5511988887777", "text": "a", "idempotency_key": "k"})
    response = api.post("/api/v1/messages", {"contact": "+5511988887777", "text": "b", "idempotency_key": "k"})
    assert response.status_code == 409 and response.json()["code"] == "idempotency_key_reused"


@pytest.mark.parametrize(("body", "field"), [
    ({"contact": "+5511988887777", "text": "  ", "idempotency_key": "k"}, "text"),
    ({"contact": "+5511988887777", "text": "x"}, "idempotency_key"),
    ({"contact": "nope", "text": "x", "idempotency_key": "k"}, "contact"),
])
def test_messages_bad_input_is_422(api, linked_chip, business_hours, body, field):
    response = api.post("/api/v1/messages", body)
    assert response.status_code == 422 and response.json()["field"] == field
    assert not OutboundMessage.objects.exists()


def test_health_instances_needs_a_key_and_summarises(client, api, linked_chip):
    assert client.get("/health/instances").status_code == 401
    body = api.get("/health/instances").json()
    assert body["total"] == 1 and body["by_state"]["unknown"] == 1


def test_the_chip_page_shows_its_instance_and_the_qr_to_link(admin_client, make_production_chip):
    from django.urls import reverse

    from instances.models import Instance

    chip = make_production_chip()
    from django.utils import timezone

    Instance.objects.filter(chip=chip).update(state="connecting", qr_code="2@abc,def", qr_updated_at=timezone.now())
    page = admin_client.get(reverse("admin:chips_chip_change", args=[chip.pk])).content.decode()
    assert chip.instance_name in page and 'alt="QR"' in page and "data:image/png;base64," in page
