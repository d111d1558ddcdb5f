"""Pool-wide opt-out (W2 4/7): a contact who asks to stop hears nothing more from any chip but answers to what
they write, until they opt back in. The detection is the classifier in instances/optout.py, with the keywords
and phrases operators add (OptOutRule)."""

from __future__ import annotations

import logging
from datetime import datetime

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from common.batch import memoized
from common.exceptions import DomainError, NotFound
from instances.models import ContactSuppression, InboundMessage, OptOutRule
from instances.optout import classify
from outbox.services import event_emit

logger = logging.getLogger(__name__)
CONFIRM_TASK = "instances.confirm_opt_out"


class ContactOptedOut(DomainError):
    status_code = 409
    code = "opted_out"


def suppressions_of(contact: str):
    """The contact's opt-outs in force (routing reads it inside its one context query)."""
    return ContactSuppression.objects.active().filter(contact=contact)


def is_suppressed(contact: str) -> bool:
    return suppressions_of(contact).exists()


def suppression_blocks(kind: str) -> bool:
    """Whether an opt-out stops a message of this kind: an opted-out contact is only ever answered (`reply`)."""
    return kind != "reply"


def ensure_not_suppressed(contact: str, *, kind: str, suppressed: bool | None = None) -> None:
    """The rule routing and sending apply (`suppression_blocks`). `suppressed`: already read by the caller (else it
    is read here)."""
    if suppression_blocks(kind) and (suppressed if suppressed is not None else is_suppressed(contact)):
        raise ContactOptedOut(_("The contact asked not to be contacted; only replies to their messages are sent."),
                              field="contact")


def suppression_add(*, contact: str, source: str, by: str = "", reason: str = "", rule: str = "",
                    trigger: InboundMessage | None = None, now: datetime | None = None) -> tuple[ContactSuppression,
                                                                                               bool]:
    """Opt the contact out (once: an active opt-out stays as it is). Emits contact.opted_out when new."""
    now = now or timezone.now()
    existing = ContactSuppression.objects.active().filter(contact=contact).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            row = ContactSuppression.objects.create(contact=contact, source=source, created_by=by[:150],
                                                    reason=reason[:300], rule=rule[:120], trigger=trigger,
                                                    created_at=now)
            event_emit(type="contact.opted_out", at=now, data={
                "contact": contact, "source": source, "reason": row.reason, "rule": rule,
                "message_id": trigger.pk if trigger else None})
    except IntegrityError:  # a concurrent opt-out of the same contact won
        return ContactSuppression.objects.active().get(contact=contact), False
    logger.info("contact opted out (%s, %s)", source, rule or reason)
    return row, True


def suppression_lift(*, contact: str, by: str, now: datetime | None = None, missing_ok: bool = True) -> bool:
    """Lift the contact's opt-out. Emits contact.opted_in. NotFound when there is none and `missing_ok` is off."""
    now = now or timezone.now()
    with transaction.atomic():
        lifted = ContactSuppression.objects.active().filter(contact=contact).update(
            lifted_at=now, lifted_by=by[:150], updated_at=now)
        if lifted:
            event_emit(type="contact.opted_in", at=now, data={"contact": contact, "by": by})
    if not lifted and not missing_ok:
        raise NotFound(_("This contact has not opted out."))
    return bool(lifted)


def inbound_opt_check(*, message: InboundMessage, now: datetime) -> str | None:
    """Run the classifier on an inbound message; opt the contact out or back in. Returns what it did."""
    if not message.contact or not message.text:
        return None
    rules = memoized("optout_rules", lambda: tuple(OptOutRule.objects.filter(is_enabled=True)
                                                   .values_list("kind", "text")))
    decision = classify(message.text, extra_keywords=[t for k, t in rules if k == OptOutRule.Kind.KEYWORD],
                        extra_phrases=[t for k, t in rules if k == OptOutRule.Kind.PHRASE])
    if decision.kind == "opt_out":
        _row, created = suppression_add(contact=message.contact, source=ContactSuppression.Source.MESSAGE,
                                        rule=decision.rule, trigger=message, now=now,
                                        reason=_("asked in a message"))
        if created and settings.OPTOUT_CONFIRMATION_TEXT:
            # Sent once, through the chip the contact wrote to, after commit (never inside the webhook).
            transaction.on_commit(lambda: _send(CONFIRM_TASK, message.pk), robust=True)
        return "opted_out" if created else None
    if decision.kind == "opt_in":
        return "opted_in" if suppression_lift(contact=message.contact, by="contact", now=now) else None
    return None


def _send(task: str, *args: object) -> None:
    current_app.send_task(task, args=list(args))


def opt_out_confirm(*, message_id: int) -> str:
    """The optional confirmation (OPTOUT_CONFIRMATION_TEXT) to a contact who just opted out, through the chip
    they wrote to; once (the idempotency key is the triggering message)."""
    from instances.models import Instance
    from instances.servers import gateway_for
    from instances.services import outbound_record_direct

    message = InboundMessage.objects.select_related("chip").filter(pk=message_id).first()
    if message is None or not settings.OPTOUT_CONFIRMATION_TEXT:
        return "skipped"
    instance = Instance.objects.select_related("server").filter(chip=message.chip).first()
    if instance is None:
        return "skipped"
    with gateway_for(instance.server) as gw:
        return outbound_record_direct(chip=message.chip, instance=instance, gw=gw, contact=message.contact,
                                      text=settings.OPTOUT_CONFIRMATION_TEXT,
                                      idempotency_key=f"optout-confirmation-{message.pk}")
