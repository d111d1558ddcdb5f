"""The growing new-contact allowance of production chips (W2 5/7): its step, moved here and nowhere else.

The allowance itself (new contacts per rolling 24 h) is part of the caps in effect (instances.caps: the step of
NEW_CONTACT_ALLOWANCE_STEPS the chip's capacity row is at); these services move the step and say why, for the
admin and the API. The pool brain (chipfarm.brain) climbs a step after ALLOWANCE_STEP_DAYS days of clean delivery
and drops one on a rest; a reach-out restriction (instances.restriction) drops one at once; a chip that enters
production again starts from the first step.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import F
from django.db.models.functions import Greatest, Least

from common.texts import stored
from instances.caps import allowance_steps
from instances.models import ChipCapacity
from instances.pool_full import pool_room_changed


def _move(chip_id: int, *, delta: int | None, reason: str, now: datetime) -> int | None:
    """Set the step (delta None: back to the first) and the reason. Returns the new step, or None when it was
    already at the end of the ladder in that direction (nothing written)."""
    ChipCapacity.objects.get_or_create(chip_id=chip_id)
    top = len(allowance_steps()) - 1
    qs = ChipCapacity.objects.filter(chip_id=chip_id)
    if delta is None:
        target = 0
    else:
        target = Least(Greatest(F("allowance_step") + delta, 0), top)
        qs = qs.filter(allowance_step__gt=0) if delta < 0 else qs.filter(allowance_step__lt=top)
    if not qs.update(allowance_step=target, **stored("allowance_reason", reason, 200), allowance_changed_at=now,
                     updated_at=now):
        return None
    if delta is not None and delta > 0:
        pool_room_changed()  # more new contacts for the chip (instances.pool_full)
    return ChipCapacity.objects.filter(chip_id=chip_id).values_list("allowance_step", flat=True).first()


def allowance_step_up(*, chip_id: int, reason: str, now: datetime) -> int | None:
    return _move(chip_id, delta=1, reason=reason, now=now)


def allowance_step_down(*, chip_id: int, reason: str, now: datetime) -> int | None:
    """One step down (never below the first); the reason is recorded even at the first step."""
    moved = _move(chip_id, delta=-1, reason=reason, now=now)
    if moved is None:
        ChipCapacity.objects.filter(chip_id=chip_id).update(**stored("allowance_reason", reason, 200),
                                                            allowance_changed_at=now, updated_at=now)
    return moved


def allowance_restart(*, chip_id: int, reason: str, now: datetime) -> int | None:
    return _move(chip_id, delta=None, reason=reason, now=now)
