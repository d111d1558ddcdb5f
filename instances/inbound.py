"""A contact's message reaching a chip: stored, tied to the contact's binding, told to the business app
(`message.received`), and read for an opt-out or opt-in (W2 4/7).

Messages between the pool's own chips (the warmer's conversations) are not contacts' messages: they feed the
trust score as delivery events only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import connection

from chips.models import Chip
from common.batch import insert_later
from common.statements import StatementCache
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


def _relation_statement(key: None, *, now: datetime, contact: str, chip_id: int, production: int,
                        expires_at: datetime) -> tuple[str, list]:
    """One statement for what the message needs to know about its contact: whether the number is one of the
    pool's own (then nothing else happens), the contact's current binding, and — for a new contact writing to a
    production chip — the binding created (`ON CONFLICT … DO NOTHING` on the one-current-binding index: a binding
    made concurrently wins, and is read again)."""
    own = Chip.objects.filter(phone=contact).exclude(status=Chip.Status.RETIRED).values("pk")[:1]
    current = ContactBinding.objects.current().filter(contact=contact).order_by().values("chip_id", "origin")[:1]
    own_sql, own_params = own.query.get_compiler(connection=connection).as_sql()
    cur_sql, cur_params = current.query.get_compiler(connection=connection).as_sql()
    from instances.routing import BINDING_COLUMNS

    table = ContactBinding._meta.db_table
    sql = (f"WITH own AS (SELECT EXISTS ({own_sql}) AS own), cur AS ({cur_sql}), "
           f"ins AS (INSERT INTO {table} ({BINDING_COLUMNS}) SELECT %s, %s, %s, NULL, '', %s, %s, NULL, %s, %s "
           f"WHERE %s = 1 AND NOT (SELECT own FROM own) AND NOT EXISTS (SELECT 1 FROM cur) "
           f"ON CONFLICT (contact) WHERE released_at IS NULL DO NOTHING RETURNING chip_id) "
           f"SELECT (SELECT own FROM own), (SELECT chip_id FROM cur), (SELECT origin FROM cur), "
           f"(SELECT chip_id FROM ins)")
    params = [*own_params, *cur_params, contact, chip_id, ContactBinding.Origin.INBOUND, now, expires_at, now, now,
              production]
    return sql, params


_RELATION = StatementCache(_relation_statement)


def _relation(contact: str, chip: Chip, now: datetime) -> tuple[bool, str, int | None]:
    """(the contact is one of the pool's own numbers, how the message relates to the contact's binding, the chip
    the contact is bound to). A new contact writing to a production chip is bound to it, so the answers come from
    the number the contact wrote to."""
    production = int(chip.status in Chip.PRODUCTION_STATES)
    (row,), _names = _RELATION.fetch(None, now=now, contact=contact, chip_id=chip.pk, production=production,
                                     expires_at=now + RoutingPolicy.binding_ttl())
    own, bound_chip, origin, created = row
    if own:
        return True, B.NEW, None
    if created is not None:
        return False, B.NEW, chip.pk
    if bound_chip is None:
        if production:  # another request bound the contact between the read and the insert: read it again
            (row,), _names = _RELATION.fetch(None, now=now, contact=contact, chip_id=chip.pk, production=0,
                                             expires_at=now)
            _own, bound_chip, origin, _created = row
        if bound_chip is None:
            return False, B.NEW, None
    if bound_chip != chip.pk:
        return False, B.OTHER, bound_chip
    return False, (B.MOVED if origin == ContactBinding.Origin.MOVED else B.STICKY), chip.pk


def inbound_receive(*, chip: Chip, data: dict[str, Any], key: dict[str, Any], phone: str, lid: str,
                    now: datetime) -> InboundMessage | None:
    """Record one inbound message (called by the webhook, in its transaction)."""
    message_id = str(key.get("id") or "")[:64]
    insert_later(DeliveryEvent(chip=chip, kind=DeliveryEvent.Kind.INBOUND, message_id=message_id,
                               remote=phone.lstrip("+")[:32], remote_lid=lid[:32], occurred_at=now))
    own, binding, bound_chip = _relation(phone, chip, now) if phone else (False, B.NEW, None)
    if own:
        return None  # one of the pool's own numbers: warming traffic, not a contact
    text, media = _text_and_media(data)
    message = InboundMessage(chip=chip, contact=phone, contact_lid=lid, gateway_message_id=message_id, text=text,
                             media=media, binding=binding, received_at=now)
    insert_later(message, numbered=True)  # read by nobody while a drain batch runs; its id is in the event
    event_emit(type="message.received", at=now, data={
        "message_id": message.pk, "gateway_message_id": message_id, "contact": phone or None,
        "contact_lid": lid or None, "chip_id": chip.pk, "chip_phone": chip.phone, "text": text or None,
        "media": media or None, "binding": binding, "bound_chip_id": bound_chip, "received_at": now})
    inbound_opt_check(message=message, now=now)
    return message
