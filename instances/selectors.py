"""Reads for the business app: a message, a contact."""

from __future__ import annotations

from django.db.models import Max

from common.exceptions import NotFound
from instances.models import ContactBinding, ContactSuppression, InboundMessage, OutboundMessage


def message_get(*, message_id: int | None = None, idempotency_key: str | None = None) -> OutboundMessage:
    qs = OutboundMessage.objects.select_related("chip")
    qs = qs.filter(pk=message_id) if message_id is not None else qs.filter(idempotency_key=idempotency_key)
    message = qs.first()
    if message is None:
        raise NotFound("No such message.")
    return message


def contact_detail(*, contact: str) -> dict:
    """The contact's current chip and number, since when, the opt-out and the last time they wrote."""
    binding = ContactBinding.objects.current().select_related("chip").filter(contact=contact).first()
    suppression = ContactSuppression.objects.active().filter(contact=contact).first()
    last = InboundMessage.objects.filter(contact=contact).aggregate(at=Max("received_at"))["at"]
    return {
        "contact": contact, "chip_id": binding.chip_id if binding else None,
        "phone": binding.chip.phone if binding else None, "bound_since": binding.created_at if binding else None,
        "binding_origin": binding.origin if binding else None,
        "previous_chip_id": binding.previous_chip_id if binding else None,
        "opted_out": suppression is not None, "opted_out_at": suppression.created_at if suppression else None,
        "last_inbound_at": last,
    }
