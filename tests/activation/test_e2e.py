"""End to end through a real Celery worker and the fakes: provision → Salvy SMS → activation → warming."""

from __future__ import annotations

import time

import pytest

from chipfarm.provisioning import chips_start_provisioning
from chips.models import Chip, ChipTransition
from instances.models import Instance

S = Chip.Status


def _wait_for(chip_id: int, status: str, worker, seconds: float = 40) -> Chip:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        chip = Chip.objects.get(pk=chip_id)
        if chip.status == status:
            return chip
        time.sleep(0.2)
    raise AssertionError(f"chip {chip_id} is {Chip.objects.get(pk=chip_id).status}, not {status}; worker log:\n"
                         + worker.log.read_text()[-3000:])


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_provision_sms_activation_warming(activation_worker, routed_to_worker, live_server, fake_salvy,
                                          fake_evolution, settings):
    """Salvy SMS → activation job → the fake activator fetches `evolution_qr_url` from the pool with no gateway
    key, gets a PNG and a JSON with a pairing code, "scans" it → the fake Evolution opens the instance → warming;
    the same URL then answers 410."""
    activation_worker.fake.reset()
    activation_worker.fake.succeed_after(1)
    fake_evolution.auto_qr = True  # connect answers the first QR (what Evolution usually does after its 2 s sleep)
    settings.PUBLIC_BASE_URL = live_server.url
    settings.EVOLUTION_WEBHOOK_URL = f"{live_server.url}/webhooks/evolution"
    fake_salvy.webhook_url = f"{live_server.url}/webhooks/salvy"

    [chip] = chips_start_provisioning(count=1, area_code="11", reason="e2e")  # the task runs in the worker

    chip = _wait_for(chip.pk, S.PENDING, activation_worker)
    assert chip.provider_line_id in fake_salvy.lines and chip.phone
    assert fake_evolution.instance_info(chip.instance_name)["webhook"]["headers"]["X-Webhook-Secret"]
    assert Instance.objects.filter(chip=chip, name=chip.instance_name).exists()

    delivered = fake_salvy.deliver_sms(chip.provider_line_id, "Seu código do WhatsApp: 246-802", "246802")
    assert delivered.status_codes == [200]

    chip = _wait_for(chip.pk, S.WARMING, activation_worker)
    history = list(ChipTransition.objects.filter(chip=chip).order_by("created_at", "id")
                   .values_list("source", "target", "transition", "actor_kind"))
    assert history == [
        ("provisioning", "pending", "provisioned", "task"),
        ("pending", "activating", "start_activation", "webhook"),
        ("activating", "warming", "activation_succeeded", "task"),
    ]
    assert chip.warming_started_at is not None and chip.warming_phase == "rest"

    [remote] = activation_worker.fake.jobs
    assert remote.evolution_qr_url.startswith(f"{live_server.url}/activation/link/")
    assert fake_evolution.api_key not in remote.evolution_qr_url
    [fetched] = remote.fetched
    assert fetched["png_bytes"] > 500 and fetched["code"].startswith("2@") and len(fetched["pairing_code"]) == 8
    assert fake_evolution.instance_info(chip.instance_name)["state"] == "open"
    deadline = time.monotonic() + 10
    while not Chip.objects.get(pk=chip.pk).is_connected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert Chip.objects.get(pk=chip.pk).is_connected  # the open webhook reached the pool
    import httpx

    assert httpx.get(remote.evolution_qr_url, timeout=5).status_code == 410
