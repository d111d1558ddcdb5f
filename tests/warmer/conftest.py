"""Warming fixtures: a small pool on the fake Evolution, and a 'WhatsApp network' that delivers what the
fake sent to the recipient's instance (as Evolution's webhooks would), through the real webhook code."""

from __future__ import annotations

import json

import pytest

from chips.models import Chip
from instances.models import ChipCapacity
from instances.services import instance_register
from instances.webhooks import evolution_event_process
from tests.factories import chip_in_state
from tests.inbox import drain_all


@pytest.fixture
def warming_pool(fake_evolution, settings):
    settings.MAX_CHIPS_ACTIVE = 100
    settings.WARMER_TYPING_MS_MAX = 0

    def _pool(*, warming: int = 1, peers: int = 4) -> tuple[list[Chip], list[Chip]]:
        subjects = [chip_in_state(status=Chip.Status.WARMING, area_code="11") for _ in range(warming)]
        others = [chip_in_state(status=Chip.Status.ACTIVE, area_code="21", trust=95) for _ in range(peers)]
        for chip in [*subjects, *others]:
            instance_register(chip=chip)
        # Roomy caps for the production peers (an operator's override); the warming subjects follow their phase.
        for chip in subjects:
            ChipCapacity.objects.get_or_create(chip=chip)
        for chip in others:
            ChipCapacity.objects.get_or_create(chip=chip, defaults={"max_per_day": 500, "max_per_hour": 100})
        fake_evolution.add_instances([c.instance_name for c in [*subjects, *others]], state="open")
        return subjects, others
    return _pool


class Network:
    """Delivers each message the fake Evolution accepted to its recipient as an inbound webhook event, and
    optionally reports every n-th one as a delivery failure to its sender (an ERROR ack)."""

    def __init__(self, fake, *, fail_every: int = 0) -> None:
        self.fake = fake
        self.fail_every = fail_every
        self.seen = 0

    def deliver(self) -> int:
        by_number = {c.phone.lstrip("+"): c.instance_name for c in Chip.objects.exclude(phone=None)}
        sent = self.fake.sent_messages
        new = sent[self.seen:]
        for message in new:
            self.seen += 1
            sender_number = next((n for n, name in by_number.items() if name == message["instance"]), "")
            if self.fail_every and self.seen % self.fail_every == 0:
                self._post(message["instance"], "messages.update",
                           {"keyId": message["key_id"], "status": "ERROR", "fromMe": True})
                continue
            recipient = by_number.get(message["number"])
            if recipient:
                self._post(recipient, "messages.upsert", {
                    "key": {"remoteJid": f"{sender_number}@s.whatsapp.net", "fromMe": False,
                            "id": f"IN{message['key_id']}"},
                    "message": {"conversation": message["text"]}, "messageType": "conversation"})
        return len(new)

    @staticmethod
    def _post(instance: str, event: str, data: dict) -> None:
        envelope = {"event": event, "instance": instance, "data": data}
        evolution_event_process(envelope, json.dumps(envelope).encode())
        drain_all()
