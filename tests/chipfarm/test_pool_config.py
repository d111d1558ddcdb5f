"""The pool configuration: its defaults come from the settings (read once, in chips.policy), and every rule on
its values is a check constraint whose message model validation and the admin show."""

from __future__ import annotations

import pytest
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse

from chipfarm.models import PoolConfiguration
from chips import policy

pytestmark = pytest.mark.django_db


def test_defaults_come_from_the_settings_for_an_unsaved_and_a_new_row(settings):
    settings.WARMER_MIN_DAYS, settings.TRUST_MIN_FOR_READY, settings.TRUST_DEGRADED_THRESHOLD = 14, 80, 40
    settings.MAX_CHIPS_ACTIVE, settings.DISCONNECTED_DEGRADE_MINUTES = 7, 12
    expected = policy.Limits(warmup_days=14, trust_min_for_ready=80, trust_degraded_threshold=40, production_max=7,
                             disconnected_degrade_minutes=12)
    assert policy.current() == expected  # no row yet: the guards judge by the settings
    assert PoolConfiguration.load().limits() == expected
    PoolConfiguration.defaults().save()
    assert PoolConfiguration.objects.get().limits() == expected


@pytest.mark.parametrize(("values", "message"), [
    ({"production_min": 30, "production_max": 20}, "The production minimum cannot exceed the maximum."),
    ({"trust_min_for_ready": 101}, "Trust thresholds go from 0 to 100."),
    ({"trust_degraded_threshold": 85, "trust_min_for_ready": 85}, "The degraded threshold must be below"),
    ({"default_area_code": "01"}, "A Brazilian area code has two digits"),
    ({"provision_batch_max": 11, "provision_daily_budget": 10}, "The batch per cycle cannot exceed the daily budget."),
])
def test_each_rule_is_a_constraint_with_its_message(values, message):
    config = PoolConfiguration.defaults()
    for name, value in values.items():
        setattr(config, name, value)
    with pytest.raises(ValidationError) as exc:
        config.full_clean()
    assert any(message in m for m in exc.value.message_dict[NON_FIELD_ERRORS])
    with pytest.raises(IntegrityError), transaction.atomic():
        config.save()  # the database holds the same rule


def test_the_admin_form_shows_the_constraint_message_and_saves_nothing(admin_client):
    PoolConfiguration.defaults().save()
    url = reverse("admin:chipfarm_poolconfiguration_change", args=[1])
    form = {"production_min": 5, "production_max": 20, "ready_min": 2, "warmup_buffer": 4, "warmup_days": 21,
            "trust_min_for_ready": 85, "trust_degraded_threshold": 50, "disconnected_degrade_minutes": 30,
            "auto_provision": "on", "default_area_code": "11", "provision_batch_max": 12,
            "provision_daily_budget": 10}
    response = admin_client.post(url, form)
    assert response.status_code == 200
    assert "The batch per cycle cannot exceed the daily budget." in response.content.decode()
    assert PoolConfiguration.objects.get().provision_batch_max == 3
    form["provision_batch_max"] = 4
    assert admin_client.post(url, form).status_code == 302
    assert PoolConfiguration.objects.get().provision_batch_max == 4
