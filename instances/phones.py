"""Contacts are phone numbers: parsed with Brazil as the default region, stored in E.164."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers


@lru_cache(maxsize=4096)  # a pure function of its text, and the parse is the dearest part of an inbound message
def normalize_contact(raw: str) -> str:
    """'5511988887777', '+55 (11) 98888-7777' or '11988887777' → '+5511988887777'; ValueError if invalid."""
    value = (raw or "").strip()
    if not value:
        raise ValueError("a phone number is required")
    digits = "".join(ch for ch in value if ch.isdigit())
    # Numbers given with the country code but without '+' (what Evolution and most CRMs send).
    candidate = value if value.startswith("+") else (f"+{digits}" if digits.startswith("55") and len(digits) >= 12
                                                      else value)
    try:
        parsed = phonenumbers.parse(candidate, "BR")
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def mask(phone: str) -> str:
    """A number for people's eyes in alerts and Slack: country and area code, then only the last four digits."""
    digits = "".join(ch for ch in phone if ch.isdigit())
    if len(digits) <= 6:
        return "*" * len(digits)
    return f"+{digits[:4]}{'*' * (len(digits) - 8)}{digits[-4:]}" if len(digits) > 8 else f"+{'*' * 4}{digits[-4:]}"
