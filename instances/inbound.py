"""A contact's message reaching a chip: stored, tied to the contact's binding, told to the business app
(`message.received`), and read for an opt-out or opt-in (W2 4/7).

Messages between the pool's own chips (the warmer's conversations) are not contacts' messages: they feed the
trust score as delivery events only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chips.models import Chip
from common.batch import insert_later
from instances.models import ContactBinding, DeliveryEvent, InboundMessage, RoutingPolicy
from instances.optouts import inbound_opt_check
from outbox.services import event_emit

TEXT_TYPES = ("conversation", "extendedTextMessage")
B = InboundMessage.Binding


def _text_and_media(data: dict[str, Any]) -> tuple[str, str]:
    message = data.get("message") if isinstance(data.get("message"), dict) else {}
    kind = str(data.get("messageType") or "")
    text = message.get("conversation")
    if not isinstance(text, str):
        ext = message.get("extendedTextMessage")
        text = ext.get("text") if isinstance(ext, dict) else None
    media = "" if kind in TEXT_TYPES or not kind else kind
    if not isinstance(text, str) and media:
        body = message.get(media)
        text = body.get("caption") if isinstance(body, dict) else None
    return (text if isinstance(text, str) else "")[:10_000], media[:32]


def _binding(contact: str, chip: Chip, now: datetime) -> tuple[str, int | None]:
    """How the message relates to the contact's binding; a new contact writing to a production chip is bound to
    it, so the answers come from the number the contact wrote to."""
    binding = ContactBinding.objects.current().filter(contact=contact).only("chip_id", "origin").first()
    if binding is None:
        if chip.status in Chip.PRODUCTION_STATES:
            ContactBinding.objects.create(contact=contact, chip=chip, origin=ContactBinding.Origin.INBOUND,
                                          last_used_at=now, expires_at=now + RoutingPolicy.binding_ttl())
            return B.NEW, chip.pk
        return B.NEW, None
    if binding.chip_id != chip.pk:
        return B.OTHER, binding.chip_id
    return (B.MOVED if binding.origin == ContactBinding.Origin.MOVED else B.STICKY), chip.pk


def inbound_receive(*, chip: Chip, data: dict[str, Any], key: dict[str, Any], phone: str, lid: str,
                    now: datetime) -> InboundMessage | None:
    """Record one inbound message (called by the webhook, in its transaction)."""
    message_id = str(key.get("id") or "")[:64]
    insert_later(DeliveryEvent(chip=chip, kind=DeliveryEvent.Kind.INBOUND, message_id=message_id,
                               remote=phone.lstrip("+")[:32], remote_lid=lid[:32], occurred_at=now))
    if phone and Chip.objects.filter(phone=phone).exclude(status=Chip.Status.RETIRED).exists():
        return None  # one of the pool's own numbers: warming traffic, not a contact
    text, media = _text_and_media(data)
    binding, bound_chip = _binding(phone, chip, now) if phone else (B.NEW, None)
    message = InboundMessage.objects.create(chip=chip, contact=phone, contact_lid=lid, gateway_message_id=message_id,
                                            text=text, media=media, binding=binding, received_at=now)
    event_emit(type="message.received", at=now, data={
        "message_id": message.pk, "gateway_message_id": message_id, "contact": phone or None,
        "contact_lid": lid or None, "chip_id": chip.pk, "chip_phone": chip.phone, "text": text or None,
        "media": media or None, "binding": binding, "bound_chip_id": bound_chip, "received_at": now})
    inbound_opt_check(message=message, now=now)
    return message
