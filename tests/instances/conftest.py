"""Fixtures for instances: production chips with their Instance rows, and business-hours time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine

from chips.models import Chip
from instances.models import ChipCapacity
from instances.services import instance_register
from tests.factories import chip_in_state

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
