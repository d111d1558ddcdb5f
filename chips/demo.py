"""Walk a chip to any state through real transitions (demo pool and test factories).

The facts each guard needs (a phone, trust, days of warming) are set as plain fields first; the
status only ever moves through `chip_transition`, with a history row per step.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from chips.models import Chip, WarmingPhase
from chips.policy import current
from chips.services import Actor, chip_transition
from common.texts import Text

S = Chip.Status

# The transitions that lead from provisioning to each state, in order.
PATHS: dict[str, list[str]] = {
    S.PROVISIONING: [],
    S.PENDING: ["provisioned"],
    S.ACTIVATING: ["provisioned", "start_activation"],
    S.WARMING: ["provisioned", "start_activation", "activation_succeeded"],
    S.READY: ["provisioned", "start_activation", "activation_succeeded", "promote_to_ready"],
    S.ACTIVE: ["provisioned", "start_activation", "activation_succeeded", "promote_to_ready",
               "promote_to_active"],
    S.COOLING: ["provisioned", "start_activation", "activation_succeeded", "promote_to_ready",
                "promote_to_active", "cool_down"],
    S.DEGRADED: ["provisioned", "start_activation", "activation_succeeded", "promote_to_ready",
                 "promote_to_active", "degrade"],
    S.BANNED: ["provisioned", "start_activation", "activation_succeeded", "ban"],
    S.RETIRED: ["provisioned", "retire"],
}


def _satisfy(chip: Chip, transition: str) -> None:
    """Set the facts the next transition's guard reads."""
    limits = current()
    if transition == "provisioned":
        chip.phone = chip.phone or f"+55{chip.area_code}9{chip.pk:08d}"
        chip.provider_line_id = chip.provider_line_id or f"line_{chip.pk:06d}"
        chip.instance_name = chip.instance_name or f"chip-{chip.pk}"
    elif transition == "promote_to_ready":
        chip.warming_phase = WarmingPhase.final()
        chip.warming_started_at = timezone.now() - timedelta(days=limits.warmup_days + 1)
        if chip.trust_score < limits.trust_min_for_ready:
            chip.set_trust(max(limits.trust_min_for_ready, 90))
    elif transition == "degrade":
        chip.set_trust(max(0, limits.trust_degraded_threshold - 20))
    elif transition == "rewarm":
        chip.is_connected = True
    else:
        return
    chip.save()


def chip_walk(*, chip: Chip, transitions: list[str], actor: Actor | None = None) -> Chip:
    actor = actor or Actor.system("demo")
    for name in transitions:
        _satisfy(chip, name)
        chip = chip_transition(chip=chip, transition=name, actor=actor, reason=Text("op.demo_walk"))
    return chip


def chip_in_state(*, status: str, area_code: str = "11", trust: int | None = None, **facts) -> Chip:
    """A new chip walked to `status`; `trust` and other facts are applied once it is there."""
    chip = Chip.objects.create(area_code=area_code)
    chip = chip_walk(chip=chip, transitions=PATHS[status])
    if trust is not None:
        chip.set_trust(trust)
    for name, value in facts.items():
        setattr(chip, name, value)
    if trust is not None or facts:
        chip.save()
    return chip
