"""Salvy's SMS object as we read it: the one parser for the `sms.received` webhook and the inbox.

Salvy describes one received SMS with the same object in two places (contracts/evolution-and-salvy.md §7): the
`data` of an `sms.received` delivery, and an item of a line's inbox (`GET .../sms-messages`, the fallback when a
webhook is late or lost), which lacks `virtualPhoneAccountId`. `salvy_sms_parse` reads both into `InboundSms`;
the webhook view calls it through `salvy_event_parse` and chipfarm's Salvy client calls it for the inbox.

Pure functions, no models: chipfarm's client imports this module (DESIGN §11 lets chipfarm use activation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from common.exceptions import InvalidInput
from common.inbound import parse_json_body

__all__ = ["InboundSms", "SalvyEvent", "salvy_event_parse", "salvy_sms_parse", "whatsapp_code"]

# WhatsApp writes its code as "123456" or "123-456".
_CODE_IN_TEXT = re.compile(r"(?<!\d)(\d{3})-?(\d{3})(?!\d)")


@dataclass(frozen=True)
class InboundSms:
    """One Salvy SMS object (a webhook's `data` or an inbox item), normalised."""

    sms_id: str
    line_id: str
    phone: str  # E.164 with "+", or "" when absent
    origin: str
    text: str
    code: str  # the WhatsApp code, digits only, or "" when the SMS carries none
    # Salvy's `receivedAt`, None when absent or unreadable: informational, a bad one does not lose a code. A receipt
    # records when the delivery reached us (sms_receive's `received_at`), not this.
    received_at: datetime | None = None


@dataclass(frozen=True)
class SalvyEvent:
    type: str
    sms: InboundSms | None  # only for sms.received


def _text(data: dict[str, Any], name: str, *, required: bool = False) -> str:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise InvalidInput(_("data.%(name)s is required.") % {"name": name}, field=f"data.{name}")
        return ""
    if not isinstance(value, str):
        raise InvalidInput(_("data.%(name)s must be a string.") % {"name": name}, field=f"data.{name}")
    return value.strip()


def _datetime(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_datetime(value)
    except ValueError:  # well formed but not a date (month 13)
        return None


def whatsapp_code(data: dict[str, Any]) -> str:
    """The code from Salvy's detection, else from the text; "" when there is none.

    Salvy detects codes per service. When it recognised the SMS as another service's code (and not WhatsApp's),
    the text is not searched: a bank's or an app's code must not start a WhatsApp activation with the wrong
    digits, which would fail and count toward the chip's retirement.
    """
    detections = data.get("detections")
    detections = detections if isinstance(detections, dict) else {}
    whatsapp = detections.get("whatsapp")
    detected = whatsapp.get("verificationCode") if isinstance(whatsapp, dict) else None
    if isinstance(detected, str | int) and not isinstance(detected, bool):
        digits = re.sub(r"\D", "", str(detected))
        if 4 <= len(digits) <= 8:
            return digits
    if any(name != "whatsapp" for name in detections):
        return ""
    match = _CODE_IN_TEXT.search(str(data.get("message") or ""))
    return match.group(1) + match.group(2) if match else ""


def salvy_sms_parse(data: Any, *, line_id: str = "") -> InboundSms:
    """One Salvy SMS object, normalised; raises InvalidInput naming the bad field.

    `line_id` stands in for a missing `virtualPhoneAccountId` (an inbox item: the line whose inbox was read).
    Fields are named as in the webhook (`data.<name>`), where this object is the envelope's `data`. Values are
    cut to the columns of an SmsReceipt. The caller strips NUL characters from the JSON text before parsing
    (common.inbound.parse_json_body(strip_nuls=True)): PostgreSQL cannot store them, and the code is read after.
    """
    if not isinstance(data, dict):
        raise InvalidInput(_("data must be an object."), field="data")
    sms_id = _text(data, "id", required=True)
    line_id = _text(data, "virtualPhoneAccountId") or str(line_id).strip()
    destination = _text(data, "destinationPhoneNumber")
    if not line_id and not destination:
        raise InvalidInput(_("data.virtualPhoneAccountId or data.destinationPhoneNumber is required."),
                           field="data.virtualPhoneAccountId")
    digits = re.sub(r"\D", "", destination)
    if data.get("message") is not None and not isinstance(data.get("message"), str):
        raise InvalidInput(_("data.message must be a string."), field="data.message")
    if data.get("detections") is not None and not isinstance(data.get("detections"), dict):
        raise InvalidInput(_("data.detections must be an object."), field="data.detections")
    return InboundSms(
        sms_id=sms_id[:64],
        line_id=line_id[:64],
        phone=f"+{digits}"[:20] if digits else "",
        origin=_text(data, "originPhoneNumber")[:32],
        text=_text(data, "message")[:500],
        code=whatsapp_code(data),
        received_at=_datetime(data.get("receivedAt")),
    )


def salvy_event_parse(body: bytes) -> SalvyEvent:
    """A webhook delivery's event type and, for `sms.received`, its SMS. Raises InvalidInput naming the bad field."""
    # NUL characters are stripped (PostgreSQL cannot store them; a real SMS may carry one): the SMS still counts.
    envelope = parse_json_body(body, strip_nuls=True)
    if not isinstance(envelope, dict):
        raise InvalidInput(_("The body must be a JSON object."), field="body")
    event_type = envelope.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise InvalidInput(_("type is required."), field="type")
    if event_type != "sms.received":
        return SalvyEvent(type=event_type, sms=None)
    return SalvyEvent(type=event_type, sms=salvy_sms_parse(envelope.get("data")))
