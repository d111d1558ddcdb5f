"""GET /activation/link/{token}: the pool serves the current QR of one linking (contracts/chip-activator.md)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from instances.linking import link_start, link_url
from instances.models import Instance, InstanceLink

pytestmark = pytest.mark.django_db


@pytest.fixture
def linking(world):
    chip = world.chip(link=False)
    instance = Instance.objects.get(chip=chip)
    link = link_start(instance=instance, purpose=InstanceLink.Purpose.OWN_NUMBER, valid_for=timedelta(minutes=10))
    world.fake.auto_qr = True  # the session shows its first QR as soon as it starts
    return world, chip, link


def get(client, link, *, json: bool = False):
    path = link_url(link).split("://", 1)[1].split("/", 1)[1]
    return client.get("/" + path, headers={"Accept": "application/json"} if json else {})


def test_it_answers_the_current_qr_as_png_and_json_with_a_pairing_code(linking, client, settings):
    world, chip, link = linking

    png = get(client, link)
    body = get(client, link, json=True).json()

    assert png.status_code == 200 and png["Content-Type"] == "image/png" and png.content[:4] == b"\x89PNG"
    assert body["state"] == "connecting" and body["code"] == world.fake.instance_info(chip.instance_name)["qr"]["code"]
    assert len(body["pairing_code"]) == 8 and body["expires_at"]
    assert link_url(link).startswith(settings.PUBLIC_BASE_URL) and settings.EVOLUTION_API_KEY not in link_url(link)
    # The gateway was asked with our key and the chip's number; nothing of it is in the answer.
    assert "apikey" not in png.headers and settings.EVOLUTION_API_URL not in str(body)


def test_a_code_about_to_expire_is_replaced_by_a_fresh_one(linking, client):
    world, chip, link = linking
    clock = [1000.0]
    world.fake.clock = lambda: clock[0]
    first = get(client, link, json=True).json()["code"]
    assert get(client, link, json=True).json()["code"] == first  # still fresh: the same code, no new request

    clock[0] += 45
    with time_machine.travel(timezone.now() + timedelta(seconds=40)):
        second = get(client, link, json=True).json()["code"]

    assert second != first


def test_it_is_gone_once_linked_and_unknown_tokens_are_404(linking, client):
    world, chip, link = linking
    code = get(client, link, json=True).json()["code"]
    world.fake.scan(chip.instance_name, code, chip.phone.lstrip("+"))
    world.relay()

    assert get(client, link).status_code == 410 and get(client, link, json=True).json()["code"] == "link_gone"
    assert InstanceLink.objects.get(pk=link.pk).end_reason == "linked"
    assert client.get("/activation/link/not-a-token").status_code == 404


def test_it_expires_with_its_deadline(linking, client):
    _world, _chip, link = linking
    with time_machine.travel(link.expires_at + timedelta(seconds=1)):
        assert get(client, link).status_code == 410
    assert InstanceLink.objects.get(pk=link.pk).end_reason == "expired"


def test_a_new_link_supersedes_the_old(linking, client):
    _world, chip, link = linking
    newer = link_start(instance=Instance.objects.get(chip=chip), purpose=InstanceLink.Purpose.RELINK,
                       valid_for=timedelta(minutes=5))
    assert get(client, link).status_code == 410 and get(client, newer).status_code == 200
    assert InstanceLink.objects.get(pk=link.pk).end_reason == "superseded"


def test_a_gone_session_is_created_again_before_the_link_opens(world, client):
    chip = world.chip()
    world.fake.forget(chip.instance_name)
    from instances.health import instances_check

    instances_check()
    instance = Instance.objects.get(chip=chip)
    assert instance.state == "gone"

    link = link_start(instance=instance, purpose=InstanceLink.Purpose.RELINK, valid_for=timedelta(minutes=5))

    assert chip.instance_name in world.fake.instance_names()
    assert get(client, link, json=True).status_code == 200
