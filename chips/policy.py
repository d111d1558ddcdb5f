"""What the lifecycle guards read besides the chip: the pool's thresholds and the moment they judge at.

Limits default to settings. The pool app (higher in DESIGN §11) owns the editable pool configuration and
registers a provider at start-up, so the guards read the operator's numbers without `chips` importing
upward. The moment is `timezone.now()` unless a caller judges at its own (the orchestrator's cycle passes
its `now` through `chips.services.chip_transition`, so its guards and its candidate queries agree).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone


@dataclass(frozen=True)
class Limits:
    warmup_days: int
    trust_min_for_ready: int
    trust_degraded_threshold: int
    production_max: int
    disconnected_degrade_minutes: int


def from_settings() -> Limits:
    """The defaults, read from settings here and nowhere else (the pool configuration's field defaults too)."""
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


_moment: ContextVar[datetime | None] = ContextVar("chips_policy_moment", default=None)


def now() -> datetime:
    """The moment the guards judge at: the caller's (see `judged_at`), else the wall clock."""
    return _moment.get() or timezone.now()


@contextmanager
def judged_at(moment: datetime | None) -> Iterator[None]:
    """Within the block, guards and transition bodies read `moment` as now (None: leave the clock as it is)."""
    if moment is None:
        yield
        return
    token = _moment.set(moment)
    try:
        yield
    finally:
        _moment.reset(token)
