"""The gateway is a set of servers: placement by free capacity, a server that stops answering (W2 2/7)."""

from __future__ import annotations

import pytest

from chipfarm.provisioning import chip_provision
from chips.demo import chip_walk
from chips.models import Chip, ChipAlert
from instances.health import instances_check
from instances.models import GatewayServer, Instance
from instances.routing import contact_route
from instances.servers import NoGatewayCapacity, server_place
from sandbox.evolution import FakeEvolution
from sandbox.server import FakeServer

pytestmark = pytest.mark.django_db
KEY = "test-evolution-key"
TO_ACTIVE = ["start_activation", "activation_succeeded", "promote_to_ready", "promote_to_active"]


@pytest.fixture
def two_servers(fake_salvy, settings, _sink_server):
    settings.MAX_CHIPS_ACTIVE = 1000
    settings.EVOLUTION_WEBHOOK_URL = f"{_sink_server.url}/webhooks/evolution"
    fakes = [FakeEvolution(api_key=KEY), FakeEvolution(api_key=KEY)]
    servers = [FakeServer(f.app).start() for f in fakes]
    rows = [GatewayServer.objects.create(name=f"evo-{i + 1}", base_url=s.url, api_key=KEY, capacity=cap)
            for i, (s, cap) in enumerate(zip(servers, (3, 5), strict=True))]
    yield fakes, servers, rows
    for server in servers:
        server.stop()


def test_lines_land_on_the_servers_by_free_capacity_and_a_full_pool_is_refused(two_servers):
    fakes, _servers, (small, big) = two_servers
    chips = [Chip.objects.create(area_code="11") for _ in range(8)]

    for chip in chips:
        chip_provision(chip_id=chip.pk)

    assert Instance.objects.filter(server=small).count() == 3 and Instance.objects.filter(server=big).count() == 5
    assert len(fakes[0].instance_names()) == 3 and len(fakes[1].instance_names()) == 5
    with pytest.raises(NoGatewayCapacity):
        server_place()


def test_a_server_that_stops_answering_takes_only_its_chips_out_of_routing_until_it_answers(
        two_servers, business_hours):
    fakes, servers, (small, big) = two_servers
    chips = []
    for _ in range(8):
        chip = Chip.objects.create(area_code="11")
        chip = chip_provision(chip_id=chip.pk)
        chips.append(chip_walk(chip=chip, transitions=TO_ACTIVE))
    for chip in chips:
        fake = fakes[0] if Instance.objects.get(chip=chip).server_id == small.pk else fakes[1]
        fake.link(chip.instance_name, chip.phone.lstrip("+"))
    instances_check()
    assert Chip.objects.filter(is_connected=True).count() == 8

    servers[1].stop()
    instances_check()

    on_big = set(Instance.objects.filter(server=big).values_list("chip_id", flat=True))
    on_small = set(Instance.objects.filter(server=small).values_list("chip_id", flat=True))
    assert set(Chip.objects.filter(is_connected=False).values_list("pk", flat=True)) == on_big
    (alert,) = ChipAlert.objects.open().filter(kind="gateway_server_down")
    assert "evo-2" in alert.message and alert.chip is None and alert.severity == "critical"
    routed = {contact_route(contact=f"+55119888800{i:02d}").chip_id for i in range(10)}
    assert routed <= on_small and routed
    big.refresh_from_db()
    assert not big.is_reachable

    servers[1] = FakeServer(fakes[1].app, port=servers[1].port).start()
    instances_check()

    assert Chip.objects.filter(is_connected=True).count() == 8
    assert not ChipAlert.objects.open().filter(kind="gateway_server_down").exists()
    big.refresh_from_db()
    assert big.is_reachable


def test_a_servers_kept_client_is_reused_until_its_key_changes():
    from instances.servers import gateway_kept

    server = GatewayServer.objects.create(name="evo-kept", base_url="http://127.0.0.1:9", api_key="first")
    kept = gateway_kept(server)
    assert gateway_kept(GatewayServer.objects.get(pk=server.pk)) is kept  # the same connections, call after call
    server.api_key = "second"
    server.save()
    renewed = gateway_kept(server)
    assert renewed is not kept and kept._http.is_closed and not renewed._http.is_closed
    assert renewed._http.headers["apikey"] == "second"
