"""The thresholds the lifecycle guards read.

Defaults come from settings. The pool app (higher in DESIGN §11) owns the editable pool configuration
and registers a provider at start-up, so the guards read the operator's numbers without `chips`
importing upward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class Limits:
    warmup_days: int
    trust_min_for_ready: int
    trust_degraded_threshold: int
    production_max: int
    disconnected_degrade_minutes: int


def from_settings() -> Limits:
    return Limits(
        warmup_days=settings.WARMER_MIN_DAYS,
        trust_min_for_ready=settings.TRUST_MIN_FOR_READY,
        trust_degraded_threshold=settings.TRUST_DEGRADED_THRESHOLD,
        production_max=settings.MAX_CHIPS_ACTIVE,
        disconnected_degrade_minutes=settings.DISCONNECTED_DEGRADE_MINUTES,
    )


_provider: Callable[[], Limits] = from_settings


def register_provider(provider: Callable[[], Limits]) -> None:
    """Called once by the pool app's AppConfig.ready()."""
    global _provider
    _provider = provider


def current() -> Limits:
    return _provider()
