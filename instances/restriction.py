"""WhatsApp's reach-out restriction, from the signal the gateway really sends (field notes §1). One rule, here.

Evolution 2.3.7 accepts every send (201 PENDING) and reports a refusal later as a receipt with ``status: ERROR``
and no error code. A chip under the restriction ("463": the reach-out timelock, or a missing privacy token) can
still talk to the contacts it has, but cannot start new chats; retrying counts as another reach-out and makes it
worse, so a failed first contact is never retried. The pattern that shows it: first messages to
``RESTRICTION_MIN_CONTACTS`` different new contacts failing within ``RESTRICTION_WINDOW_HOURS``. One failure alone,
or failures to contacts the chip already talks to, are delivery noise. A gateway that does send the code
(``messageStubParameters`` with "463", or an ``errorCode``) restricts at once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import formats, timezone

from chips.models import Chip, ChipAlert
from chips.services import alert_raise
from common.texts import Text
from instances.models import ChipCapacity, DeliveryEvent, OutboundMessage
from instances.phones import mask

logger = logging.getLogger(__name__)
TIMELOCK_CODE = 463


def restricted_q(prefix: str = "", *, now: datetime) -> Q:
    """The filter for "restricted from new contacts now" on a query over chips (``prefix`` = path to the chip)."""
    return Q(**{f"{prefix}capacity__restricted_until__gt": now})


def is_restricted(capacity: ChipCapacity | None, now: datetime) -> bool:
    return capacity is not None and capacity.restricted_until is not None and capacity.restricted_until > now


def explicit_code(data: dict[str, Any]) -> bool:
    """Whether a receipt carries the restriction's own code (a gateway that forwards it; 2.3.7 never does)."""
    stub = data.get("messageStubParameters")
    if isinstance(stub, list) and any(str(p).strip() == str(TIMELOCK_CODE) for p in stub):
        return True
    try:
        return int(data.get("errorCode")) == TIMELOCK_CODE
    except (TypeError, ValueError):
        return False


def receipt_failed(*, chip: Chip, key_id: str, remote: str, now: datetime, coded: bool) -> bool:
    """Record one ERROR receipt and restrict the chip when the evidence is there. Returns True when it did.

    ``remote`` is the contact's digits from the receipt. Whether the failed message was a first contact comes from
    our own record of the send (the chip's first message after the contact was bound to it).
    """
    message = (OutboundMessage.objects.filter(evolution_message_id=key_id, chip=chip).only("first_contact")
               .first() if key_id else None)
    first = bool(message and message.first_contact)
    DeliveryEvent.objects.create(chip=chip, kind=DeliveryEvent.Kind.FAILED, message_id=key_id[:64],
                                 remote=remote[:32], first_contact=first, occurred_at=now)
    if coded:
        return chip_restrict(chip=chip, now=now, evidence=[(remote, now)], coded=True)
    if not first:
        return False
    window = now - timedelta(hours=settings.RESTRICTION_WINDOW_HOURS)
    evidence: dict[str, datetime] = {}
    for contact, at in (DeliveryEvent.objects.filter(chip=chip, kind=DeliveryEvent.Kind.FAILED, first_contact=True,
                                                     occurred_at__gte=window)
                        .order_by("occurred_at").values_list("remote", "occurred_at")):
        evidence.setdefault(contact, at)
    if len(evidence) < settings.RESTRICTION_MIN_CONTACTS:
        return False
    return chip_restrict(chip=chip, now=now, evidence=sorted(evidence.items(), key=lambda kv: kv[1]), coded=False)


def chip_restrict(*, chip: Chip, now: datetime, evidence: list[tuple[str, datetime]], coded: bool) -> bool:
    """Keep the chip off new contacts for TIMELOCK_HOURS; its current contacts still route to it. Once per lock."""
    until = now + timedelta(hours=settings.TIMELOCK_HOURS)
    ChipCapacity.objects.get_or_create(chip=chip)
    changed = ChipCapacity.objects.filter(Q(restricted_until__isnull=True) | Q(restricted_until__lte=now),
                                          chip=chip).update(restricted_until=until, updated_at=now)
    if not changed:
        return False  # already restricted: the evidence keeps coming while the lock lasts
    seen = ", ".join(f"{mask(contact)} {formats.time_format(timezone.localtime(at), 'H:i')}"
                     for contact, at in evidence)
    DeliveryEvent.objects.create(chip=chip, kind=DeliveryEvent.Kind.TIMELOCK, detail=seen[:200], occurred_at=now)
    if chip.status in Chip.PRODUCTION_STATES:
        from instances.allowance import allowance_step_down

        allowance_step_down(chip_id=chip.pk, reason=Text(
            "allowance.restriction", at=formats.date_format(timezone.localtime(now), "SHORT_DATETIME_FORMAT")), now=now)
    if coded:
        message = Text("alert.restricted_coded", chip=chip, seen=seen)
    else:
        message = Text("alert.restricted", chip=chip, n=len(evidence), hours=settings.RESTRICTION_WINDOW_HOURS,
                       seen=seen)
    alert_raise(kind="restricted", severity=ChipAlert.Severity.WARNING, chip=chip, message=message,
                action_taken=Text("action.no_new_contacts",
                                  until=formats.date_format(timezone.localtime(until), "SHORT_DATETIME_FORMAT")))
    logger.warning("chip %s restricted from new contacts until %s (%s)", chip.pk, until.isoformat(),
                   "coded" if coded else f"{len(evidence)} failed first contacts")
    return True
