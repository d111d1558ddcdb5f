"""The business app's side (W2 4/7): it hears replies, statuses, moves and opt-outs, signed, from a real
receiver on loopback; it can ask about a message and a contact; opt-outs hold on every chip."""

from __future__ import annotations

import base64
import json

import pytest
import redis
from django.conf import settings as django_settings
from standardwebhooks.webhooks import Webhook

from chipfarm.models import PoolConfiguration
from chipfarm.orchestrator import replace_degraded
from chips.models import Chip
from instances.models import (
    ChipCapacity,
    ContactBinding,
    ContactSuppression,
    InboundMessage,
    OptOutRule,
    OutboundMessage,
)
from instances.routing import contact_route
from instances.services import message_send
from instances.tasks import confirm_opt_out
from outbox import delivery

pytestmark = pytest.mark.django_db
CONTACT = "+5511988887777"


def events(consumer, endpoint, type_: str | None = None) -> list[dict]:
    got = [Webhook(endpoint.secret).verify(r.body, r.headers) for r in consumer.accepted()]
    return [e for e in got if type_ is None or e["type"] == type_]


def deliver() -> None:
    while delivery.deliveries_sweep():
        pass


def test_an_inbound_message_reaches_the_app_once_signed(world, consumer, endpoint):
    chip = world.chip()
    world.fake.inbound(chip.instance_name, CONTACT.lstrip("+"), "Oi! Quero saber do meu pedido.")
    assert world.relay() == ["accepted"]  # stored by the webhook, applied by the drain (the relay runs it)
    deliver()

    (received,) = events(consumer, endpoint, "message.received")
    data = received["data"]
    assert (data["contact"], data["chip_id"], data["chip_phone"]) == (CONTACT, chip.pk, chip.phone)
    assert data["text"] == "Oi! Quero saber do meu pedido." and data["binding"] == "new"
    assert data["gateway_message_id"] == InboundMessage.objects.get().gateway_message_id
    world.relay()  # (nothing more: a retried delivery of the same message is a duplicate)
    assert len(events(consumer, endpoint, "message.received")) == 1


def test_delivered_and_read_receipts_become_statuses_in_order(world, consumer, endpoint, business_hours, api):
    chip = world.chip()
    outcome = message_send(contact=CONTACT, text="Olá", idempotency_key="k-1")
    world.fake.ack(chip.instance_name, outcome.message.evolution_message_id, "DELIVERY_ACK")
    world.fake.ack(chip.instance_name, outcome.message.evolution_message_id, "READ")
    world.relay()
    deliver()

    statuses = [e["data"]["status"] for e in events(consumer, endpoint, "message.status")]
    assert statuses == ["queued", "sent", "delivered", "read"]
    by_id = api.get(f"/api/v1/messages/{outcome.message.pk}").json()
    by_key = api.get("/api/v1/messages?idempotency_key=k-1").json()
    assert by_id == by_key and by_id["status"] == "read" and by_id["read_at"] and by_id["delivered_at"]
    assert api.get("/api/v1/messages?idempotency_key=nope").status_code == 404


def test_a_replaced_chip_moves_each_contact_with_both_numbers(world, consumer, endpoint, business_hours, api):
    config = PoolConfiguration.defaults()
    config.production_min = 1
    config.save()
    old = world.chip(priority=10)
    for contact in ("+5511988880001", "+5511988880002"):
        contact_route(contact=contact)
    from chips.demo import chip_walk

    spare = chip_walk(chip=Chip.objects.create(area_code="11"), transitions=["provisioned", "start_activation",
                                                                             "activation_succeeded",
                                                                             "promote_to_ready"])
    Chip.objects.filter(pk=old.pk).update(trust_score=10)

    from django.utils import timezone

    replace_degraded(PoolConfiguration.load(), timezone.now())
    deliver()

    moved = [e["data"] for e in events(consumer, endpoint, "contact.moved")]
    assert sorted(m["contact"] for m in moved) == ["+5511988880001", "+5511988880002"]
    assert all((m["from_chip_id"], m["from_phone"], m["to_chip_id"], m["to_phone"]) ==
               (old.pk, old.phone, spare.pk, spare.phone) for m in moved)
    contact = api.get("/api/v1/contacts/5511988880001").json()
    assert contact["chip_id"] == spare.pk and contact["phone"] == spare.phone and contact["binding_origin"] == "moved"


def _reserved() -> tuple:
    """Everything a route or a send reserves: the chips' counters, the bindings, the message rows."""
    return (list(ChipCapacity.objects.order_by("chip_id").values()),
            list(ContactBinding.objects.order_by("pk").values()), OutboundMessage.objects.count())


def test_parar_opts_the_contact_out_on_every_chip_and_voltar_lifts_it(world, consumer, endpoint, business_hours,
                                                                      api):
    first, second = world.chip(), world.chip()
    world.fake.inbound(second.instance_name, CONTACT.lstrip("+"), "Parar")
    world.relay()
    deliver()

    (opted,) = events(consumer, endpoint, "contact.opted_out")
    assert opted["data"]["contact"] == CONTACT and opted["data"]["rule"].startswith("keyword:")
    sent_before, reserved_before = len(world.fake.sent_messages), _reserved()
    refused = api.post("/api/v1/route", {"contact": CONTACT})
    assert refused.status_code == 409 and refused.json()["code"] == "opted_out"
    refused = api.post("/api/v1/messages", {"contact": CONTACT, "text": "oferta", "idempotency_key": "k-x"})
    assert refused.status_code == 409 and refused.json()["code"] == "opted_out"
    assert len(world.fake.sent_messages) == sent_before  # no sendText
    assert _reserved() == reserved_before  # no counter taken, no binding, no message row
    reply = api.post("/api/v1/messages", {"contact": CONTACT, "text": "Ok, removido.", "idempotency_key": "k-r",
                                          "kind": "reply"})
    assert reply.status_code == 201  # a contact who writes can still be answered
    assert api.get(f"/api/v1/contacts/{CONTACT}").json()["opted_out"] is True

    world.fake.inbound(first.instance_name, CONTACT.lstrip("+"), "voltar")  # on another chip: pool-wide
    world.relay()
    deliver()
    assert [e["data"]["contact"] for e in events(consumer, endpoint, "contact.opted_in")] == [CONTACT]
    assert api.post("/api/v1/route", {"contact": CONTACT}).status_code == 200


def test_the_suppressions_api_adds_and_removes(api, consumer, endpoint):
    added = api.post("/api/v1/suppressions", {"contact": "(11) 98888-7777", "reason": "asked by phone"})
    assert added.status_code == 201 and added.json()["contact"] == CONTACT
    assert api.post("/api/v1/suppressions", {"contact": CONTACT}).status_code == 200  # already: unchanged
    assert ContactSuppression.objects.active().count() == 1
    assert api.post("/api/v1/route", {"contact": CONTACT}).json()["code"] == "opted_out"
    from django.test import Client

    assert Client().delete(f"/api/v1/suppressions/{CONTACT}").status_code == 401  # the API key is required
    response = api.delete(f"/api/v1/suppressions/{CONTACT}")
    assert response.status_code == 204 and not ContactSuppression.objects.active().exists()
    assert api.delete(f"/api/v1/suppressions/{CONTACT}").status_code == 404
    deliver()
    assert [e["type"] for e in events(consumer, endpoint) if e["type"].startswith("contact.")] == [
        "contact.opted_out", "contact.opted_in"]


def test_a_reply_needs_the_contact_to_have_written(api, world, business_hours):
    world.chip()
    response = api.post("/api/v1/route", {"contact": CONTACT, "kind": "reply"})
    assert response.status_code == 409 and response.json()["code"] == "not_a_reply"



def test_operators_keep_the_opt_out_list_in_the_admin(operator_client):
    from django.urls import reverse

    operator_client.post(reverse("admin:instances_contactsuppression_add"), {"contact": "11 98888-7777",
                                                                             "reason": "pediu por telefone"})
    row = ContactSuppression.objects.get()
    assert (row.contact, row.source, row.created_by) == (CONTACT, "admin", "operator")
    operator_client.post(reverse("admin:instances_contactsuppression_changelist"),
                         {"action": "lift", "_selected_action": [row.pk]})
    row.refresh_from_db()
    assert row.lifted_at is not None and row.lifted_by == "operator"
    assert operator_client.post(reverse("admin:instances_contactsuppression_delete", args=[row.pk])).status_code == 403


def _run_queued(task) -> list:
    """Run, as a worker would, the calls of `task` this test queued on the real broker; the queue is emptied."""
    broker = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    queue = django_settings.CELERY_TASK_DEFAULT_QUEUE
    results = []
    for raw in broker.lrange(queue, 0, -1):
        message = json.loads(raw)
        if message["headers"]["task"] == task.name:
            args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            results.append(task.apply(args=args, kwargs=kwargs).get())
    broker.delete(queue)
    return results


def _write(world, chip, text: str, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):  # as on commit: the confirmation is queued then
        world.fake.inbound(chip.instance_name, CONTACT.lstrip("+"), text)
        world.relay()


def _to_contact(world) -> list[dict]:
    return [m for m in world.fake.sent_messages if m["number"] == CONTACT.lstrip("+")]


def test_no_opt_out_confirmation_by_default(world, django_capture_on_commit_callbacks):
    assert django_settings.OPTOUT_CONFIRMATION_TEXT == ""
    redis.Redis.from_url(django_settings.CELERY_BROKER_URL).delete(django_settings.CELERY_TASK_DEFAULT_QUEUE)
    chip = world.chip()
    _write(world, chip, "PARAR", django_capture_on_commit_callbacks)
    assert ContactSuppression.objects.active().filter(contact=CONTACT).exists()
    assert _run_queued(confirm_opt_out) == [] and _to_contact(world) == []


def test_the_opt_out_confirmation_goes_once_through_the_chip_written_to(world, settings,
                                                                        django_capture_on_commit_callbacks):
    settings.OPTOUT_CONFIRMATION_TEXT = "Pronto, você não receberá mais mensagens."
    redis.Redis.from_url(django_settings.CELERY_BROKER_URL).delete(django_settings.CELERY_TASK_DEFAULT_QUEUE)
    _other, written_to = world.chip(), world.chip()
    _write(world, written_to, "PARAR", django_capture_on_commit_callbacks)
    _write(world, written_to, "PARAR", django_capture_on_commit_callbacks)  # already out: nothing more to confirm

    assert _run_queued(confirm_opt_out) == ["sent"]
    (sent,) = _to_contact(world)
    assert sent["instance"] == written_to.instance_name and sent["text"] == settings.OPTOUT_CONFIRMATION_TEXT
    assert ContactSuppression.objects.active().filter(contact=CONTACT).count() == 1


def test_an_operator_keyword_opts_out_through_a_real_inbound_message(world, consumer, endpoint):
    from instances.optout import classify

    assert classify("xô lista").kind != "opt_out"  # not one of the built-in keywords or phrases
    OptOutRule.objects.create(kind=OptOutRule.Kind.KEYWORD, text="XO LISTA", created_by="operator")
    chip = world.chip()
    world.fake.inbound(chip.instance_name, CONTACT.lstrip("+"), "Xô lista!")
    world.relay()
    deliver()

    (opted,) = events(consumer, endpoint, "contact.opted_out")
    assert opted["data"]["contact"] == CONTACT and opted["data"]["rule"] == "operator_keyword:XO LISTA"
    assert opted["data"]["message_id"] == InboundMessage.objects.get(text="Xô lista!").pk
    assert ContactSuppression.objects.active().get(contact=CONTACT).trigger.text == "Xô lista!"
