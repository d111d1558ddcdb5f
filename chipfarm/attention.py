"""Chips that need a person: the dashboard's "needs attention" list and the chip list's filter ask the same rules.

Each kind is a named filter over chips. The rules themselves live where they belong (restriction in
instances.restriction, low trust in chips' QuerySet, the pool's thresholds in its configuration); this module
only says which of them an operator must look at.

Adding a kind: write its filter, add it to ATTENTION_KINDS. The circuit breaker's "circuit open" (a later issue)
plugs in at `circuit_open_q`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils.translation import gettext_lazy as _

from chips.models import Chip, low_trust_q
from chips.policy import Limits
from instances.restriction import restricted_q

S = Chip.Status
# How long a chip may sit in provisioning, pending or activating before someone should look (the pipeline sweep
# reads the Salvy inbox of a pending chip after the same wait).
PIPELINE_STUCK_MINUTES = settings.SMS_WAIT_MINUTES


def disconnected_q(limits: Limits, now: datetime) -> Q:
    """Production chips (active, cooling) whose session is not connected."""
    return Q(status__in=Chip.PRODUCTION_STATES, is_connected=False)


def restricted_chips_q(limits: Limits, now: datetime) -> Q:
    """Live chips WhatsApp restricts from new contacts now (the 463 timelock)."""
    return Q(status__in=Chip.LIVE_STATES) & restricted_q(now=now)


def stuck_q(limits: Limits, now: datetime) -> Q:
    """Chips in the pipeline (provisioning, pending, activating) unchanged for PIPELINE_STUCK_MINUTES."""
    return Q(status__in=Chip.PIPELINE_STATES, updated_at__lt=now - timedelta(minutes=PIPELINE_STUCK_MINUTES))


def low_trust_chips_q(limits: Limits, now: datetime) -> Q:
    """Ready and production chips whose trust fell below the degraded threshold (the next cycle degrades them)."""
    return Q(status__in=Chip.DEGRADABLE_STATES) & low_trust_q(limits)


def circuit_open_q(limits: Limits, now: datetime) -> Q | None:
    """Hook for the circuit breaker (a later issue): the chips whose sending circuit is open. None until then, and
    the dashboard shows no such group."""
    return None


@dataclass(frozen=True)
class AttentionKind:
    key: str
    title: str
    condition: Callable[[Limits, datetime], Q | None]


ATTENTION_KINDS: list[AttentionKind] = [
    AttentionKind("disconnected", _("Disconnected production chips"), disconnected_q),
    AttentionKind("restricted", _("Restricted from new contacts"), restricted_chips_q),
    AttentionKind("stuck", _("Stuck in the pipeline"), stuck_q),
    AttentionKind("low_trust", _("Low trust"), low_trust_chips_q),
    AttentionKind("circuit_open", _("Circuit open"), circuit_open_q),
]


def attention_kinds(limits: Limits, now: datetime) -> list[tuple[AttentionKind, Q]]:
    """The kinds that apply now, with their filters (a hook returning None is left out)."""
    return [(kind, q) for kind in ATTENTION_KINDS if (q := kind.condition(limits, now)) is not None]


def attention_filter(queryset: QuerySet[Chip], key: str, limits: Limits, now: datetime) -> QuerySet[Chip]:
    for kind, q in attention_kinds(limits, now):
        if kind.key == key:
            return queryset.filter(q)
    return queryset.none()
