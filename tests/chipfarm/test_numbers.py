"""Numbers by hand (W2 3/7): own numbers, linking and re-linking, buying lines within the budget — through the API."""

from __future__ import annotations

import pytest

from chipfarm.models import OrchestratorOperation, PoolConfiguration
from chips.models import Chip, ChipTransition
from instances.health import instances_check
from instances.models import Instance, InstanceLink
from instances.routing import RoutingRefused, contact_route

pytestmark = pytest.mark.django_db
OWN = "+55 61 98765-4321"


def _scan(world, client, url: str, chip: Chip) -> None:
    """The phone scans what the pool's link shows (the link, not the gateway, gives the code)."""
    code = client.get("/" + url.split("/", 3)[3], headers={"Accept": "application/json"}).json()["code"]
    world.fake.scan(chip.instance_name, code, chip.phone.lstrip("+"))
    world.relay()


def test_an_own_number_is_added_waits_for_its_link_and_then_warms(world, api, client):
    world.fake.auto_qr = True
    response = api.post("/api/v1/chips", {"phone": OWN, "source": "own"})

    assert response.status_code == 201, response.content
    chip = Chip.objects.get(pk=response.json()["id"])
    assert (chip.status, chip.source, chip.phone, chip.provider_line_id) == ("pending", "own", "+5561987654321", None)
    assert chip.instance_name in world.fake.instance_names()
    op = OrchestratorOperation.objects.get(kind="own_number", chip=chip)
    assert op.actor.startswith("test-")

    link = api.post(f"/api/v1/chips/{chip.pk}/link").json()
    assert link["purpose"] == "own_number" and "/activation/link/" in link["url"]
    _scan(world, client, link["url"], chip)

    chip.refresh_from_db()
    assert chip.status == Chip.Status.WARMING and chip.is_connected and chip.warming_phase == "rest"
    assert ChipTransition.objects.filter(chip=chip, transition="linked").exists()
    assert client.get("/" + link["url"].split("/", 3)[3]).status_code == 410


def test_a_number_declared_warm_starts_at_a_later_phase(world, api, client, settings):
    world.fake.auto_qr = True
    chip_id = api.post("/api/v1/chips", {"phone": OWN, "source": "own", "warm": True}).json()["id"]
    chip = Chip.objects.get(pk=chip_id)
    _scan(world, client, api.post(f"/api/v1/chips/{chip_id}/link").json()["url"], chip)

    chip.refresh_from_db()
    assert chip.status == "warming" and chip.warming_phase == settings.WARM_NUMBER_PHASE and chip.declared_warm
    assert "declared warm" in ChipTransition.objects.get(chip=chip, transition="provisioned").reason


@pytest.mark.parametrize(("phone", "why"), [("123", "phone"), ("+1 202 555 0143", "Brazilian"), ("", "phone")])
def test_invalid_numbers_are_refused_and_nothing_is_written(world, api, phone, why):
    response = api.post("/api/v1/chips", {"phone": phone, "source": "own"})
    assert response.status_code == 422 and response.json()["field"] == "phone" and why in response.json()["message"]
    assert not Chip.objects.exists() and world.fake.instance_names() == []


def test_a_duplicate_number_is_refused_and_nothing_is_written(world, api):
    assert api.post("/api/v1/chips", {"phone": OWN, "source": "own"}).status_code == 201
    response = api.post("/api/v1/chips", {"phone": "5561987654321", "source": "own"})
    assert response.status_code == 422 and "already in the pool" in response.json()["message"]
    assert Chip.objects.count() == 1 and len(world.fake.instance_names()) == 1


def test_only_own_numbers_are_added(api):
    response = api.post("/api/v1/chips", {"phone": OWN, "source": "salvy"})
    assert response.status_code == 422 and response.json()["field"] == "source"


def test_a_logged_out_chip_is_relinked_and_routes_again_never_before(world, api, client, business_hours):
    world.fake.auto_qr = True
    chip = world.chip()
    world.fake.close(chip.instance_name, 401)
    world.relay()
    with pytest.raises(RoutingRefused):
        contact_route(contact="+5511988880001")  # unlinked: it takes no traffic

    link = api.post(f"/api/v1/chips/{chip.pk}/link").json()
    assert link["purpose"] == "relink"
    _scan(world, client, link["url"], chip)

    chip.refresh_from_db()
    assert chip.is_connected and chip.status == "active"
    assert contact_route(contact="+5511988880001").chip_id == chip.pk


def test_a_chip_whose_instance_vanished_is_recreated_and_relinked(world, api, client, business_hours):
    world.fake.auto_qr = True
    chip = world.chip()
    world.fake.forget(chip.instance_name)
    instances_check()
    assert Instance.objects.get(chip=chip).state == "gone"

    link = api.post(f"/api/v1/chips/{chip.pk}/link").json()
    _scan(world, client, link["url"], chip)

    chip.refresh_from_db()
    assert chip.is_connected and contact_route(contact="+5511988880002").chip_id == chip.pk
    assert InstanceLink.objects.get(instance__chip=chip).end_reason == "linked"


def test_linking_a_linked_chip_is_a_409(world, api):
    chip = world.chip()
    response = api.post(f"/api/v1/chips/{chip.pk}/link")
    assert response.status_code == 409 and response.json()["code"] == "nothing_to_link"


def test_lines_are_bought_by_hand_within_the_daily_budget(api, django_capture_on_commit_callbacks):
    config = PoolConfiguration.defaults()
    config.provision_daily_budget, config.provision_batch_max = 4, 3
    config.save()

    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = api.post("/api/v1/pool/provision", {"count": 3, "area_code": "21"})

    assert response.status_code == 201 and len(response.json()["chip_ids"]) == 3
    assert response.json()["remaining_today"] == 1 and len(queued) == 3
    ops = OrchestratorOperation.objects.filter(kind="manual_provision")
    assert ops.count() == 3 and all(o.actor.startswith("test-") for o in ops)
    refused = api.post("/api/v1/pool/provision", {"count": 2})
    assert refused.status_code == 409 and refused.json()["remaining"] == 1 and "1" in refused.json()["message"]
    assert Chip.objects.count() == 3


def test_the_same_number_added_at_the_same_moment_is_a_422_and_leaves_no_session(world, api, monkeypatch):
    from chipfarm import numbers
    from instances.phones import normalize_contact

    assert api.post("/api/v1/chips", {"phone": OWN, "source": "own"}).status_code == 201
    # The other request's check ran before this one committed: only the database's constraint sees the duplicate.
    monkeypatch.setattr(numbers, "_own_phone", normalize_contact)
    response = api.post("/api/v1/chips", {"phone": OWN, "source": "own"})
    assert response.status_code == 422 and response.json()["field"] == "phone"
    assert Chip.objects.count() == 1 and len(world.fake.instance_names()) == 1  # its session was deleted again
