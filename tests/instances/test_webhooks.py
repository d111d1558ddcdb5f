"""POST /webhooks/evolution: secret, validation, dedup, and what each event does."""

from __future__ import annotations

import json

import pytest

from chips.models import Chip, ChipAlert, ChipTransition
from instances.models import ChipCapacity, ContactBinding, DeliveryEvent, Instance, OutboundMessage, WebhookReceipt
from instances.routing import contact_route
from tests.inbox import drain_all

pytestmark = pytest.mark.django_db
URL = "/webhooks/evolution"


@pytest.fixture
def post(client, settings):
    def _post(envelope, *, secret=None, raw=None):
        response = client.post(URL, data=raw if raw is not None else json.dumps(envelope),
                               content_type="application/json",
                               headers={"X-Webhook-Secret": secret if secret is not None
                                        else settings.EVOLUTION_WEBHOOK_SECRET})
        drain_all()  # a stored message event is applied by the drain task, as in production
        return response
    return _post


def envelope(instance: str, event: str, data) -> dict:
    return {"event": event, "instance": instance, "data": data, "destination": "http://x/webhooks/evolution",
            "date_time": "2026-11-24T10:00:00.000Z", "server_url": "http://evo", "apikey": None}


def close(instance: str, code: int) -> dict:
    return envelope(instance, "connection.update", {"instance": instance, "state": "close", "statusReason": code})


@pytest.mark.parametrize("code", [402, 403, 406])
def test_final_ban_codes_ban_the_chip_with_a_history_row(post, make_production_chip, business_hours, code):
    chip = make_production_chip(per_hour=10)
    contact_route(contact="+5511988887777")

    response = post(close(chip.instance_name, code))

    assert response.status_code == 200 and response.json()["status"] == "processed"
    chip.refresh_from_db()
    assert chip.status == Chip.Status.BANNED and not chip.is_connected
    row = ChipTransition.objects.filter(chip=chip).first()
    assert (row.transition, row.actor_kind, row.target) == ("ban", "webhook", "banned")
    assert str(code) in row.reason
    assert not ContactBinding.objects.current().filter(chip=chip).exists()
    assert ChipAlert.objects.open().get(chip=chip, kind="banned").severity == "critical"
    instance = Instance.objects.get(chip=chip)
    assert (instance.state, instance.last_disconnect_code) == ("close", code)


def test_401_is_logged_out_not_banned(post, make_production_chip):
    chip = make_production_chip()
    post(close(chip.instance_name, 401))
    chip.refresh_from_db()
    assert chip.status == Chip.Status.ACTIVE and not chip.is_connected
    assert ChipAlert.objects.open().filter(chip=chip, kind="logged_out").exists()


def test_open_marks_connected(post, make_production_chip):
    chip = make_production_chip()
    Chip.objects.filter(pk=chip.pk).update(is_connected=False)
    post(envelope(chip.instance_name, "connection.update", {"state": "open", "statusReason": 200}))
    chip.refresh_from_db()
    assert chip.is_connected and Instance.objects.get(chip=chip).state == "open"


def test_a_repeated_open_or_connecting_report_opens_no_transaction(client, settings, post, make_production_chip):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from instances.inbox import instance_id_for
    from instances.models import InstanceLink

    def report(body):  # the request alone (no drain afterwards: a state event is applied in it)
        return client.post(URL, data=json.dumps(body), content_type="application/json",
                           headers={"X-Webhook-Secret": settings.EVOLUTION_WEBHOOK_SECRET})

    chip = make_production_chip()
    Instance.objects.filter(chip=chip).update(state="open")
    instance_id_for(chip.instance_name)  # a running pool knows its instances' names
    opened = envelope(chip.instance_name, "connection.update", {"state": "open", "statusReason": 200})
    with CaptureQueriesContext(connection) as again:
        assert report(opened).json()["status"] == "processed"
    # One read (the session's state, its chip's connection, whether a link waits on it) — and nothing written.
    assert len(again.captured_queries) == 1, [q["sql"][:80] for q in again.captured_queries]

    instance = Instance.objects.get(chip=chip)
    InstanceLink.objects.create(token="t" * 40, instance=instance, purpose=InstanceLink.Purpose.RELINK,
                                expires_at=instance.updated_at)
    post(opened)  # a link waits: the same report now ends it
    assert not InstanceLink.objects.filter(instance=instance, ended_at__isnull=True).exists()

    connecting = envelope(chip.instance_name, "connection.update", {"state": "connecting"})
    post(connecting)
    assert Instance.objects.get(chip=chip).state == "connecting"
    with CaptureQueriesContext(connection) as flood:
        for _ in range(5):
            report(connecting)
    assert len(flood.captured_queries) == 5  # one read per report, no transaction, no write


def test_duplicates_are_processed_once(post, make_production_chip):
    chip = make_production_chip()
    inbound = envelope(chip.instance_name, "messages.upsert", {
        "key": {"remoteJid": "5511988887777@s.whatsapp.net", "fromMe": False, "id": "3A5F0C2B9E1D7A4C6B8E"},
        "message": {"conversation": "oi"}, "messageType": "conversation"})
    outcomes = [post(inbound).json()["status"] for _ in range(3)]
    assert outcomes == ["accepted", "duplicate", "duplicate"]
    assert DeliveryEvent.objects.filter(chip=chip, kind="inbound").count() == 1

    # A state event has no id of its own: it is applied idempotently, without a receipt row.
    ban = close(chip.instance_name, 403)
    assert [post(ban).json()["status"] for _ in range(2)] == ["processed", "processed"]
    assert ChipTransition.objects.filter(chip=chip, transition="ban").count() == 1
    assert ChipAlert.objects.get(chip=chip, kind="banned").occurrences == 1
    assert not WebhookReceipt.objects.filter(event="connection.update").exists()


def test_acks_update_the_message_and_record_outcomes(post, make_production_chip):
    chip = make_production_chip()
    message = OutboundMessage.objects.create(idempotency_key="k1", contact="+5511988887777", chip=chip, text="oi",
                                             status="sent", evolution_message_id="3EB0AAAABBBBCCCCDDDDEE")
    for status in ("SERVER_ACK", "DELIVERY_ACK", "READ"):
        post(envelope(chip.instance_name, "messages.update",
                      {"keyId": message.evolution_message_id, "status": status, "fromMe": True}))
    message.refresh_from_db()
    assert message.status == "read" and message.delivered_at and message.read_at
    kinds = list(DeliveryEvent.objects.filter(chip=chip).order_by("id").values_list("kind", flat=True))
    assert kinds == ["server_ack", "delivered", "read"]


def test_a_late_ack_never_moves_a_message_back_and_costs_one_statement(make_production_chip):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from instances.webhooks import _apply_ack

    chip = make_production_chip()
    message = OutboundMessage.objects.create(idempotency_key="k2", contact="+5511988887777", chip=chip, text="oi",
                                             status="sent", evolution_message_id="3EB0LATE")
    other = OutboundMessage.objects.create(idempotency_key="k3", contact="+5511988887777", chip=chip, text="oi",
                                           status="sent", evolution_message_id="3EB0OTHER")
    now = timezone.now()
    for status, expected in (("READ", "read"), ("DELIVERY_ACK", "read"), ("PLAYED", "read"), ("ERROR", "failed"),
                             ("DELIVERY_ACK", "delivered"), ("SERVER_ACK", "delivered")):
        with CaptureQueriesContext(connection) as ctx:
            _apply_ack("3EB0LATE", status, now)
        message.refresh_from_db()
        assert message.status == expected, status
        on_messages = [q["sql"] for q in ctx.captured_queries if "instances_outboundmessage" in q["sql"]]
        # One UPDATE, and no read of the rows back: no endpoint listens for message.status.
        assert [sql.split()[0] for sql in on_messages] == ([] if status == "SERVER_ACK" else ["UPDATE"]), status
    assert message.error == "WhatsApp reported a delivery error" and message.read_at == now
    other.refresh_from_db()
    assert other.status == "sent"  # only the acknowledged message moves


def test_463_timelock_restricts_the_chip_from_new_contacts(post, make_production_chip, business_hours):
    chip = make_production_chip(per_hour=50)
    contact_route(contact="+5511988880001")
    post(envelope(chip.instance_name, "messages.update",
                  {"keyId": "3EB0X", "status": "ERROR", "errorCode": 463, "errorMessage": "reach-out timelock"}))
    capacity = ChipCapacity.objects.get(chip=chip)
    assert capacity.restricted_until is not None
    assert DeliveryEvent.objects.filter(chip=chip, kind="timelock").count() == 1
    assert ChipAlert.objects.open().filter(chip=chip, kind="restricted").exists()
    from instances.routing import RoutingRefused

    with pytest.raises(RoutingRefused):
        contact_route(contact="+5511988880002")
    assert contact_route(contact="+5511988880001").chip_id == chip.pk


def test_qrcode_is_stored(post, make_production_chip):
    chip = make_production_chip()
    qrcode = {"instance": chip.instance_name, "code": "2@abc,def", "base64": "data:image/png;base64,xx"}
    post(envelope(chip.instance_name, "qrcode.updated", {"qrcode": qrcode}))
    instance = Instance.objects.get(chip=chip)
    assert instance.qr_code == "2@abc,def" and instance.qr_updated_at is not None


@pytest.mark.parametrize("secret", ["", "wrong", "dev-evolution-webhook-secreT"])
def test_bad_secret_is_401_and_writes_nothing(post, make_production_chip, secret):
    chip = make_production_chip()
    response = post(close(chip.instance_name, 403), secret=secret)
    assert response.status_code == 401 and response.json()["code"] == "unauthorized"
    chip.refresh_from_db()
    assert chip.status == Chip.Status.ACTIVE
    assert not WebhookReceipt.objects.exists() and not ChipAlert.objects.exists()


@pytest.mark.parametrize("raw", ["not json", "[]", '{"event": "connection.update"}', '{"instance": "x"}',
                                 '{"event": 1, "instance": "x"}'])
def test_malformed_is_422(post, raw):
    response = post(None, raw=raw)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_input" and response.json()["message"]
    assert not WebhookReceipt.objects.exists()


def test_unknown_instance_is_200_and_logged(post, caplog):
    response = post(close("nobody-here", 403))
    assert response.status_code == 200 and response.json()["status"] == "unknown_instance"
    assert "unknown instance" in caplog.text
    assert not WebhookReceipt.objects.exists()
