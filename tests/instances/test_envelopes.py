"""Every real-shaped envelope of the contract's catalogue is accepted, and LID contacts are attributed right.

The envelopes are the recorded 2.3.7-shaped payloads in tests/instances/payloads/ (from the contract's §3.5 and the
field notes), not bodies built by the code under test.
"""

from __future__ import annotations

import json

import pytest

from instances.models import ContactIdentity, DeliveryEvent, Instance, WebhookReceipt
from tests.inbox import drain_all
from tests.instances.conftest import PAYLOADS, payload, production_chip

pytestmark = pytest.mark.django_db

CATALOGUE = sorted(p.stem for p in PAYLOADS.glob("*.json"))


@pytest.fixture
def post(client, settings):
    def _post(body: dict):
        response = client.post("/webhooks/evolution", data=json.dumps(body), content_type="application/json",
                               headers={"X-Webhook-Secret": settings.EVOLUTION_WEBHOOK_SECRET})
        drain_all()  # a stored message event is applied by the drain, as in production
        return response
    return _post


# The contract's §3.4 event catalogue: every event `webhook/set` accepts, under the name its envelope carries.
# GROUP_UPDATE is accepted but never delivered: 2.3.7 emits group metadata updates as `groups.update`
# (GROUPS_UPDATE), which neither the per-instance event list nor the global EVENTS switches contain (§3.4, quirk).
CONTRACT_EVENTS = {
    "application.startup", "qrcode.updated", "messages.set", "messages.upsert", "messages.edited", "messages.update",
    "messages.delete", "send.message", "send.message.update", "contacts.set", "contacts.upsert", "contacts.update",
    "presence.update", "chats.set", "chats.upsert", "chats.update", "chats.delete", "groups.upsert",
    "group-participants.update", "connection.update", "labels.edit", "labels.association", "call", "typebot.start",
    "typebot.change-status", "remove.instance", "logout.instance", "instance.create", "instance.delete",
    "status.instance",
}


def test_the_catalogue_covers_the_events_of_the_contract():
    recorded = {json.loads((PAYLOADS / f"{name}.json").read_text())["event"] for name in CATALOGUE}
    assert CONTRACT_EVENTS - recorded == set()  # every catalogue event has at least one recorded envelope
    assert recorded - CONTRACT_EVENTS == set()  # and nothing recorded is outside the catalogue


def test_every_recorded_envelope_names_its_source():
    for name in CATALOGUE:
        body = json.loads((PAYLOADS / f"{name}.json").read_text())
        assert body.get("_source"), name


@pytest.mark.parametrize("name", CATALOGUE)
def test_every_real_envelope_answers_2xx(post, settings, name):
    settings.MAX_CHIPS_ACTIVE = 1000
    chip = production_chip()
    response = post(payload(name, instance=chip.instance_name))
    assert response.status_code == 200, response.content
    assert response.json()["status"] in ("accepted", "processed", "ignored")
    # A stored message event was applied without error (the drain gives nothing up).
    assert not WebhookReceipt.objects.exclude(outcome=WebhookReceipt.Outcome.PROCESSED).exists()


@pytest.mark.parametrize("name", ["chats_upsert", "messages_update_error", "connection_update_open"])
def test_an_envelope_for_an_instance_we_do_not_know_answers_2xx(post, name):
    assert post(payload(name, instance="not-ours")).status_code == 200


def test_a_nul_in_a_message_is_stripped_not_refused(post, settings):
    settings.MAX_CHIPS_ACTIVE = 1000
    chip = production_chip()
    body = payload("messages_upsert_text", instance=chip.instance_name)
    body["data"]["message"]["conversation"] = "oi\u0000 tudo bem"
    body["data"]["key"]["id"] = "3A\u0000NUL"

    assert post(body).status_code == 200
    assert DeliveryEvent.objects.get(chip=chip, kind="inbound").message_id == "3ANUL"


# --- contacts that are LIDs (field notes §5) -------------------------------------------------------------------

@pytest.fixture
def chip(settings):
    settings.MAX_CHIPS_ACTIVE = 1000
    return production_chip()


def inbound(chip) -> DeliveryEvent:
    return DeliveryEvent.objects.filter(chip=chip, kind="inbound").order_by("-id").first()


def test_lid_only_inbound_is_stored_as_a_lid_never_as_a_phone(post, chip):
    post(payload("messages_upsert_lid_only", instance=chip.instance_name))
    event = inbound(chip)
    assert (event.remote, event.remote_lid) == ("", "123456789012345")
    assert not ContactIdentity.objects.exists()


def test_with_remote_jid_alt_the_message_is_attributed_to_the_phone(post, chip):
    post(payload("messages_upsert_lid_with_alt", instance=chip.instance_name))
    event = inbound(chip)
    assert (event.remote, event.remote_lid) == ("5511977776666", "123456789012345")
    assert ContactIdentity.objects.get(lid="123456789012345").phone == "+5511977776666"


def test_a_lid_seen_once_with_its_phone_is_attributed_on_its_next_lid_only_message(post, chip):
    post(payload("messages_upsert_pn_with_lid_alt", instance=chip.instance_name))  # the pair, learned
    post(payload("messages_upsert_lid_only", instance=chip.instance_name))

    event = inbound(chip)
    assert (event.remote, event.remote_lid) == ("5511977776666", "123456789012345")


def test_a_phone_typed_message_is_not_an_inbound_reply(post, chip):
    post(payload("messages_upsert_from_me", instance=chip.instance_name))
    assert inbound(chip) is None


def test_the_recorded_error_receipt_carries_no_code(post, chip):
    """What 2.3.7 sends for a refused message: exactly these keys (field notes §1)."""
    body = payload("messages_update_error", instance=chip.instance_name)
    assert set(body["data"]) == {"keyId", "remoteJid", "fromMe", "status", "instanceId", "messageId"}
    assert post(body).status_code == 200
    assert DeliveryEvent.objects.filter(chip=chip, kind="failed").count() == 1
    assert Instance.objects.get(chip=chip).state == "unknown"  # a receipt says nothing of the session
