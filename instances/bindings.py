"""A contact's binding to a chip beyond one route decision (DESIGN §4): moving or releasing every binding of a chip
(a replacement, a ban), telling the app a contact's number changed, and the admin's view of the capacity counters."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from chips.models import Chip
from instances.caps import day_window, hour_window
from instances.kinds import MESSAGE_KINDS
from instances.models import ChipCapacity, ContactBinding

KIND_COUNTERS = [f"hour_{k}" for k in MESSAGE_KINDS]


def contact_moved_emit(*, contact: str, old: tuple[int, str | None], new: tuple[int, str | None], reason: str,
                       now: datetime) -> None:
    """`contact.moved`: the contact's number changed, so the app can tell the contact (Twilio's sticky sender).
    `old` and `new` are (chip id, phone)."""
    from outbox.services import event_emit

    event_emit(type="contact.moved", at=now, data={
        "contact": contact, "from_chip_id": old[0], "from_phone": old[1], "to_chip_id": new[0],
        "to_phone": new[1], "reason": reason})


def bindings_move(*, from_chip_id: int, to_chip_id: int, reason: str, now: datetime | None = None) -> int:
    """Move every current binding of one chip to another (a replacement); returns how many moved.

    Each moved binding is released and re-created on the new chip with `origin=moved`, so the history
    of who talked through which number stays queryable. Moved contacts do not count as new contacts.
    """
    now = now or timezone.now()
    with transaction.atomic():
        old = list(ContactBinding.objects.current().select_for_update().filter(chip_id=from_chip_id))
        if not old:
            return 0
        chips = {c.pk: c for c in Chip.objects.filter(pk__in=[from_chip_id, to_chip_id])}
        for b in old:
            contact_moved_emit(contact=b.contact, old=(from_chip_id, chips[from_chip_id].phone),
                               new=(to_chip_id, chips[to_chip_id].phone), reason=reason, now=now)
        ContactBinding.objects.filter(pk__in=[b.pk for b in old]).update(released_at=now, updated_at=now)
        ContactBinding.objects.bulk_create([
            ContactBinding(contact=b.contact, chip_id=to_chip_id, origin=ContactBinding.Origin.MOVED,
                           previous_chip_id=from_chip_id, move_reason=reason[:200], last_used_at=b.last_used_at,
                           expires_at=b.expires_at)
            for b in old
        ])
    return len(old)


def bindings_release(*, chip_id: int, reason: str, now: datetime | None = None) -> int:
    """Release a chip's current bindings (a ban with nowhere to move them); the next route rebinds."""
    now = now or timezone.now()
    return ContactBinding.objects.current().filter(chip_id=chip_id).update(
        released_at=now, move_reason=reason[:200], updated_at=now
    )


def counters_reset(now: datetime | None = None) -> int:
    """Zero the counters of past windows. Reservations never need this (they treat an older window as
    zero inside their lock); it keeps the admin's usage columns honest. Idempotent."""
    now = now or timezone.now()
    hour, day = hour_window(now), day_window(now)
    stale_hour = Q(hour_count__gt=0) | Q(hour_prospecting__gt=0) | Q(hour_follow_up__gt=0) | Q(hour_reply__gt=0)
    changed = ChipCapacity.objects.filter(stale_hour, hour_window__lt=hour).update(
        hour_count=0, **dict.fromkeys(KIND_COUNTERS, 0), updated_at=now)
    changed += ChipCapacity.objects.filter(day_window__lt=day, day_count__gt=0).update(day_count=0, updated_at=now)
    return changed
