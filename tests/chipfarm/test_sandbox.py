"""The sandbox world: SMS codes for new lines, links after activation, pool-to-pool messages delivered."""

from __future__ import annotations

import pytest

from sandbox.runner import Sandbox
from sandbox.server import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def sandbox(settings):
    settings.EVOLUTION_API_URL = f"http://127.0.0.1:{free_port()}"
    settings.SALVY_API_URL = f"http://127.0.0.1:{free_port()}"
    settings.CHIP_ACTIVATOR_URL = f"http://127.0.0.1:{free_port()}"
    box = Sandbox(app_url="http://127.0.0.1:9", slack_port=free_port(), consumer_port=free_port(), sms_delay=1.0,
                  seed=7).start()
    yield box
    box.stop()


def test_the_world_texts_codes_links_activations_and_delivers_pool_messages(sandbox, settings):
    from chipfarm.client import SalvyClient
    from instances.gateway.evolution import EvolutionGateway as EvolutionClient

    with SalvyClient() as salvy:
        line = salvy.provision(area_code=11, name="chipfarm-1")
    assert sandbox.tick(now=100.0)["texted"] == 0
    assert sandbox.tick(now=101.5)["texted"] == 1
    assert sandbox.salvy.inbox(line.id)[0]["detections"]["whatsapp"]["verificationCode"]

    number = line.phone_number.lstrip("+")
    with EvolutionClient() as evolution:
        hook = {"webhook": evolution.webhook_config(url="http://127.0.0.1:9/webhooks/evolution", secret="s")}
        evolution.create_instance("chipfarm-1", number=number, **hook)
        evolution.create_instance("chipfarm-2", number="5521988880000", **hook)
    sandbox.evolution.link("chipfarm-2", "5521988880000")
    # (The activator's scan of the pool's link is exercised end to end in tests/activation/test_e2e.py.)
    assert sandbox.activator.scan_via == sandbox.servers[0].url
    sandbox.evolution.link("chipfarm-1", number)
    assert sandbox.evolution.instance_info("chipfarm-1")["state"] == "open"

    with EvolutionClient() as evolution:
        evolution.send_text("chipfarm-2", number=number, text="Oi, tudo bem?")
    before = len(sandbox.evolution.deliveries)
    sandbox.tick(now=201.0)
    upserts = [d for d in sandbox.evolution.deliveries[before:] if d["event"] == "messages.upsert"]
    assert any(d["instance"] == "chipfarm-1" for d in upserts)
