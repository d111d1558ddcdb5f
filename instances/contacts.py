"""Who wrote to us: a phone number, a WhatsApp LID, or both (field notes §5).

WhatsApp is moving contacts to LIDs (``<digits>@lid``), which are not phone numbers. Evolution 2.3.7 replaces an
``@lid`` ``key.remoteJid`` by ``key.remoteJidAlt`` when Baileys gives the phone, but messages carrying only the LID
still arrive. So: the phone comes from whichever JID is a phone JID; a LID is kept as a LID, never read as a
number; and a LID seen together with its phone is remembered, so its later LID-only messages are attributed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction

from instances.models import ContactIdentity
from instances.phones import normalize_contact

PHONE_SUFFIXES = ("@s.whatsapp.net", "@c.us")
LID_SUFFIX = "@lid"


def _split(jids: list[Any]) -> tuple[str, str]:
    phone = lid = ""
    for value in jids:
        if not isinstance(value, str):
            continue
        if value.endswith(LID_SUFFIX) and not lid:
            lid = value[: -len(LID_SUFFIX)].split(":", 1)[0]
        elif value.endswith(PHONE_SUFFIXES) and not phone:
            digits = value.split("@", 1)[0].split(":", 1)[0]
            try:
                phone = normalize_contact(digits)
            except ValueError:
                phone = ""
    return phone, lid[:32]


def remote_identity(key: dict[str, Any], *, now: datetime) -> tuple[str, str]:
    """(phone in E.164 or "", LID digits or "") of a message key; learns the LID ↔ phone pair when both appear."""
    phone, lid = _split([key.get("remoteJid"), key.get("remoteJidAlt")])
    if lid and phone:
        contact_identity_learn(lid=lid, phone=phone, now=now)
    elif lid:
        phone = ContactIdentity.objects.filter(lid=lid).values_list("phone", flat=True).first() or ""
        if phone:
            ContactIdentity.objects.filter(lid=lid).update(last_seen_at=now)
    return phone, lid


def contact_identity_learn(*, lid: str, phone: str, now: datetime) -> None:
    """Remember (or refresh) that ``lid`` is ``phone``; safe under concurrent first sightings."""
    updated = ContactIdentity.objects.filter(lid=lid).update(phone=phone, last_seen_at=now)
    if updated:
        return
    try:
        with transaction.atomic():
            ContactIdentity.objects.create(lid=lid, phone=phone, first_seen_at=now, last_seen_at=now)
    except IntegrityError:
        ContactIdentity.objects.filter(lid=lid).update(phone=phone, last_seen_at=now)
