"""Defaults of the pool configuration's settings-backed thresholds.

The settings are read in one place, `chips.policy.from_settings` (the lifecycle guards' fallback); the model's
field defaults are these callables, so a new row takes the settings in force when it is made and a migration
never freezes a value.
"""

from chips.policy import from_settings


def production_max() -> int:
    return from_settings().production_max


def warmup_days() -> int:
    return from_settings().warmup_days


def trust_min_for_ready() -> int:
    return from_settings().trust_min_for_ready


def trust_degraded_threshold() -> int:
    return from_settings().trust_degraded_threshold


def disconnected_degrade_minutes() -> int:
    return from_settings().disconnected_degrade_minutes


def reserve_budget() -> int:
    """The most chips auto_reserve may keep in reserve (ready_min + warmup_buffer): RESERVE_BUDGET."""
    from django.conf import settings

    return settings.RESERVE_BUDGET
