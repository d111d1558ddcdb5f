"""Fixtures for the pool: its configuration and a helper that plays the provisioning task's part."""

from __future__ import annotations

import pytest

from chipfarm.models import PoolConfiguration
from chipfarm.provisioning import chip_provision
from chips.models import Chip


@pytest.fixture
def pool_config(db):
    def _config(**values) -> PoolConfiguration:
        config = PoolConfiguration.defaults()
        for name, value in values.items():
            setattr(config, name, value)
        config.full_clean()
        config.save()
        return config
    return _config


def run_provisioning_tasks() -> int:
    """Do what the queued chipfarm.provision_chip tasks do (they delegate to chip_provision)."""
    ids = list(Chip.objects.filter(status=Chip.Status.PROVISIONING, provider_line_id__isnull=True)
               .values_list("pk", flat=True))
    for chip_id in ids:
        chip_provision(chip_id=chip_id)
    return len(ids)
