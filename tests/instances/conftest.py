"""Fixtures for instances: production chips with their Instance rows, and business-hours time."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine

from chips.models import Chip
from instances.models import ChipCapacity
from instances.services import instance_register
from tests.factories import chip_in_state
from tests.inbox import drain_all

# A Tuesday, 10:00 in São Paulo (13:00 UTC): inside business hours, not a holiday.
BUSINESS_TIME = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)


@pytest.fixture
def business_hours():
    with time_machine.travel(BUSINESS_TIME, tick=True) as traveller:
        yield traveller


def production_chip(*, area_code: str = "11", per_hour: int | None = None, per_day: int | None = None,
                    new_contacts: int | None = None, priority: int = 0, **facts) -> Chip:
    chip = chip_in_state(status=Chip.Status.ACTIVE, area_code=area_code, **facts)
    instance_register(chip=chip)
    ChipCapacity.objects.create(chip=chip, max_per_hour=per_hour, max_per_day=per_day,
                                max_new_contacts_per_day=new_contacts, priority=priority)
    return chip


@pytest.fixture
def make_production_chip(settings):
    settings.MAX_CHIPS_ACTIVE = 1000
    return production_chip


# --- the gateway's world: the fake Evolution with our chips' real instances, its webhooks relayed to the app -----

PAYLOADS = Path(__file__).parent / "payloads"


def payload(name: str, *, instance: str, **data_updates) -> dict:
    """A recorded 2.3.7-shaped envelope (tests/instances/payloads, from the contract) addressed to `instance`."""
    body = json.loads((PAYLOADS / f"{name}.json").read_text())
    body.pop("_source", None)
    body["instance"] = instance
    if data_updates:
        body["data"] = {**body["data"], **data_updates}
    return body


class _Sink:
    """Where the fake delivers our instances' webhooks: answers 200 and keeps nothing (the fake records them)."""

    def __init__(self) -> None:
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def ok(request):
            return JSONResponse({"status": "ok"})

        self.app = Starlette(routes=[Route("/webhooks/evolution", ok, methods=["POST"])])


@pytest.fixture(scope="session")
def _sink_server():
    from sandbox.server import FakeServer

    with FakeServer(_Sink().app) as server:
        yield server


class World:
    """Chips with real instances on the fake Evolution. What the fake delivers is relayed into the app, with its
    real headers and bytes, when the test says so (`relay()`): a dropped delivery never arrives."""

    def __init__(self, fake, client) -> None:
        self.fake = fake
        self.client = client
        self._seen = 0

    def chip(self, *, link: bool = True, **capacity) -> Chip:
        from instances.services import instance_create

        chip = chip_in_state(status=Chip.Status.ACTIVE)
        instance_create(chip=chip, name=chip.instance_name)
        ChipCapacity.objects.update_or_create(chip=chip, defaults=capacity)
        if link:
            self.fake.link(chip.instance_name, chip.phone.lstrip("+"))
            self.relay()
        chip.refresh_from_db()
        return chip

    def relay(self) -> list[str]:
        """Post every delivery the fake made since the last relay to /webhooks/evolution; their outcomes."""
        deliveries = self.fake.deliveries[self._seen:]
        self._seen += len(deliveries)
        outcomes = []
        for d in deliveries:
            if d["status_code"] is None:  # lost on the way (drop_webhooks)
                continue
            headers = {k: v for k, v in d["headers"].items() if k.lower() == "x-webhook-secret"}
            response = self.client.post("/webhooks/evolution", data=json.dumps(d["payload"]),
                                        content_type="application/json", headers=headers)
            outcomes.append(response.json().get("status", str(response.status_code)))
        drain_all()  # the stored message events, applied as the drain task would
        return outcomes


@pytest.fixture
def world(fake_evolution, client, settings, _sink_server):
    settings.MAX_CHIPS_ACTIVE = 1000
    settings.EVOLUTION_WEBHOOK_URL = f"{_sink_server.url}/webhooks/evolution"
    return World(fake_evolution, client)
