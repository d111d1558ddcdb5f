"""Per-contact courtesy, pool-wide (W2 5/7): whatever chip sends, a contact is not pestered.

- At most CONTACT_MAX_PER_HOUR messages to one contact in a rolling hour (`contact_rate_limited`, 429 with
  Retry-After). Replies count toward it but are never refused by it: a contact who is writing to us is in a
  conversation, and answering them is not pestering (the chip's hard caps still hold).
- Never the same text to the same contact twice within DUPLICATE_CONTENT_HOURS (`duplicate_content`, 409), replies
  included: a repeated text is what a stuck sender or a loop looks like to WhatsApp. Texts are compared with their
  whitespace collapsed and case folded.

Messages that never left (the gateway refused them) do not count. The check runs before routing, so a refusal
reserves no capacity; it takes a transaction-level advisory lock on the contact, so two concurrent sends to one
contact are judged one after the other.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils.translation import gettext as _

from common.exceptions import DomainError
from instances.kinds import REPLY
from instances.models import OutboundMessage

# pg_advisory_xact_lock(key1, key2): key1 names this lock's family, key2 is hashtext(contact).
COURTESY_LOCK = 7_340_200


class ContactRateLimited(DomainError):
    status_code = 429
    code = "contact_rate_limited"

    def __init__(self, message: str, *, retry_after: int, **extra: object) -> None:
        super().__init__(message, **extra)
        self.retry_after = retry_after


class DuplicateContent(DomainError):
    status_code = 409
    code = "duplicate_content"


def normalized(text: str) -> str:
    return " ".join(text.split()).casefold()


def contact_lock(contact: str) -> None:
    """Serialise the sends to one contact until the caller's transaction ends."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [COURTESY_LOCK, contact])


def courtesy_check(*, contact: str, text: str, kind: str, now: datetime) -> None:
    """Raise DuplicateContent or ContactRateLimited when this message would be one too many (see module doc).
    One indexed query over the contact's last 24 h (outbound_contact_at_idx)."""
    since = now - timedelta(hours=max(settings.DUPLICATE_CONTENT_HOURS, 1))
    recent = list(
        OutboundMessage.objects.filter(contact=contact, created_at__gte=since)
        .exclude(Q(status=OutboundMessage.Status.FAILED) & Q(sent_at__isnull=True))  # never left
        .values_list("text", "created_at")
    )
    wanted = normalized(text)
    if any(normalized(previous) == wanted for previous, _at in recent):
        raise DuplicateContent(
            _("The same text already went to this contact within %(hours)d hours.")
            % {"hours": settings.DUPLICATE_CONTENT_HOURS}, field="text")
    if kind == REPLY or settings.CONTACT_MAX_PER_HOUR <= 0:  # 0: no hourly limit
        return
    hour_ago = now - timedelta(hours=1)
    in_hour = sorted(at for _text, at in recent if at >= hour_ago)
    if len(in_hour) >= settings.CONTACT_MAX_PER_HOUR:
        retry_after = max(1, int((in_hour[-settings.CONTACT_MAX_PER_HOUR] + timedelta(hours=1) - now)
                                 .total_seconds()) + 1)
        raise ContactRateLimited(
            _("This contact already got %(n)d messages in the last hour (at most %(max)d).")
            % {"n": len(in_hour), "max": settings.CONTACT_MAX_PER_HOUR}, retry_after=retry_after, field="contact")
