"""Writes for instances: registration, the kill switch, sending a message once."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from chips.models import Chip
from common.exceptions import DomainError, InvalidInput
from instances import circuit, sessions
from instances.courtesy import contact_lock, courtesy_check
from instances.gateway import Gateway, GatewayError
from instances.kinds import DEFAULT_KIND
from instances.models import DeliveryEvent, GatewayServer, Instance, OutboundMessage, RoutingPolicy, SendingSwitch
from instances.routing import contact_route
from instances.servers import gateway_for, gateway_for_instance, server_place
from outbox.services import event_emit

logger = logging.getLogger(__name__)


def instance_register(*, chip: Chip, name: str | None = None, server: GatewayServer | None = None) -> Instance:
    """The Instance row of a chip (created once; its name is the chip's gateway instance name). Without a server
    it goes where servers.server_place() says (the seed server in a one-server pool)."""
    instance = Instance.objects.filter(chip=chip).first()
    if instance is not None:
        return instance
    with transaction.atomic():
        instance, _created = Instance.objects.get_or_create(
            chip=chip, defaults={"name": name or chip.instance_name, "server": server or server_place()})
    return instance


def webhook_config(gw: Gateway):
    """What every instance's webhook must be: our receiver's URL and the shared secret header."""
    return gw.webhook_config(url=settings.EVOLUTION_WEBHOOK_URL, secret=settings.EVOLUTION_WEBHOOK_SECRET)


def instance_create(*, chip: Chip, name: str, gw: Gateway | None = None) -> Instance:
    """Place the chip's session on a gateway server, create it there (with our webhook); idempotent.

    The Instance row (with its server) is written first, so a retry goes to the same server; an instance left by
    an earlier attempt ("exists") gets its webhook set again, so it points at us.
    """
    instance = instance_register(chip=chip, name=name)
    own = gw is None
    gw = gw or gateway_for(instance.server)
    try:
        try:
            gw.create_instance(name, number=(chip.phone or "").lstrip("+") or None, webhook=webhook_config(gw))
        except GatewayError as exc:
            if exc.kind != "exists":
                raise
            gw.set_webhook(name, webhook_config(gw))
    finally:
        if own:
            gw.close()
    return instance


def sending_pause(*, reason: str, by: str) -> RoutingPolicy:
    """The kill switch: every route and send is refused with `paused` until resumed.

    A reason is required (blank or whitespace: InvalidInput naming `reason`). Pausing while paused changes nothing:
    the pause in force keeps who paused, when and why.
    """
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput(_("Give a reason to pause sending."), field="reason")
    with transaction.atomic():
        policy = RoutingPolicy.load()
        policy = RoutingPolicy.objects.select_for_update().get(pk=policy.pk)
        if policy.is_paused:
            return policy
        now = timezone.now()
        policy.is_paused, policy.paused_reason, policy.paused_by = True, reason[:300], by[:150]
        policy.paused_at = now
        policy.save()
        SendingSwitch.objects.create(reason=policy.paused_reason, paused_by=policy.paused_by, paused_at=now)
        event_emit(type="pool.paused", data={"reason": policy.paused_reason, "by": policy.paused_by})
    logger.warning("sending paused by %s: %s", by, reason)
    return policy


def sending_resume(*, by: str) -> RoutingPolicy:
    """Lift the kill switch: the pause in force moves to the history (SendingSwitch) with who resumed and when, and
    the policy's pause fields are cleared. Resuming while not paused changes nothing."""
    with transaction.atomic():
        policy = RoutingPolicy.load()
        policy = RoutingPolicy.objects.select_for_update().get(pk=policy.pk)
        if not policy.is_paused:
            return policy
        now = timezone.now()
        closed = SendingSwitch.objects.filter(resumed_at__isnull=True).update(
            resumed_by=by[:150], resumed_at=now, updated_at=now)
        if not closed:  # paused before the history existed: record it now, so the history is complete
            SendingSwitch.objects.create(reason=policy.paused_reason or "?", paused_by=policy.paused_by or "?",
                                         paused_at=policy.paused_at or now, resumed_by=by[:150], resumed_at=now)
        policy.is_paused, policy.paused_reason, policy.paused_by, policy.paused_at = False, "", "", None
        policy.save()
        event_emit(type="pool.resumed", data={"by": by[:150]})
    logger.warning("sending resumed by %s", by)
    return policy


def sending_last_switch() -> SendingSwitch | None:
    """The latest use of the kill switch (open or closed)."""
    return SendingSwitch.objects.order_by("-paused_at", "-id").first()


class IdempotencyKeyReused(DomainError):
    status_code = 409
    code = "idempotency_key_reused"


@dataclass(frozen=True)
class SendOutcome:
    message: OutboundMessage
    binding: str
    replayed: bool


STATUS_NAMES = {"sending": "queued", "sent": "sent", "delivered": "delivered", "read": "read", "failed": "failed"}


def message_status_emit(message: OutboundMessage, *, at: datetime | None = None) -> None:
    """`message.status` for the business app: what became of a message it asked us to send."""
    event_emit(type="message.status", at=at, data={
        "message_id": message.pk, "idempotency_key": message.idempotency_key, "contact": message.contact,
        "chip_id": message.chip_id, "status": STATUS_NAMES.get(message.status, message.status),
        "reason": message.error or None, "at": at or timezone.now()})


def _gateway_send(message: OutboundMessage, *, instance_name: str, gw: Gateway) -> OutboundMessage:
    """Call sendText once for a stored message and record the answer (never retried: not idempotent)."""
    try:
        result = gw.send_text(instance_name, number=message.contact.lstrip("+"), text=message.text)
    except GatewayError as exc:
        error = str(exc)
        if exc.kind == "timeout":
            error = f"timed out; the message may or may not have been sent (not retried): {exc}"
        with transaction.atomic():
            OutboundMessage.objects.filter(pk=message.pk).update(
                status=OutboundMessage.Status.FAILED, error=error[:500], updated_at=timezone.now())
            message.refresh_from_db()
            message_status_emit(message)
        logger.warning("send failed on chip %s: %s", message.chip_id, exc.kind)
        send_failure_observed(chip_id=message.chip_id, error=exc)
    else:
        with transaction.atomic():
            OutboundMessage.objects.filter(pk=message.pk).update(
                status=OutboundMessage.Status.SENT, evolution_message_id=result.message_id, sent_at=timezone.now(),
                updated_at=timezone.now())
            message.refresh_from_db()
            message_status_emit(message)
        send_success_observed(chip_id=message.chip_id, message_id=result.message_id)
    return message


def message_send(*, contact: str, text: str, idempotency_key: str, kind: str = DEFAULT_KIND,
                 client: Gateway | None = None) -> SendOutcome:
    """Route, store, then call the gateway's sendText exactly once; a repeated key returns the first result.

    The message row (with its reservation) is committed before the HTTP call, so a crash or a timeout
    can never lead to a second send: sendText is not idempotent and is never retried here. A timeout
    leaves the message `failed` with the uncertainty spelled out in its error.

    Before routing, the per-contact courtesy (instances.courtesy) may refuse: ContactRateLimited (429) past
    CONTACT_MAX_PER_HOUR, DuplicateContent (409) for the same text within 24 h; neither reserves capacity.
    """
    existing = OutboundMessage.objects.filter(idempotency_key=idempotency_key).select_related("chip").first()
    if existing is not None:
        return _replay(existing, contact, text)
    try:
        with transaction.atomic():
            contact_lock(contact)
            # Under the contact's lock: a concurrent send with the same key may have committed meanwhile.
            existing = OutboundMessage.objects.filter(idempotency_key=idempotency_key).select_related("chip").first()
            if existing is None:
                courtesy_check(contact=contact, text=text, kind=kind, now=timezone.now())
                decision = contact_route(contact=contact, kind=kind)
                message = OutboundMessage.objects.create(
                    idempotency_key=idempotency_key, contact=contact, chip_id=decision.chip_id, text=text, kind=kind,
                    # The chip's first message to a contact just bound to it: a reach-out (restriction signal).
                    first_contact=decision.binding in ("new", "moved"),
                )
                message_status_emit(message)
        if existing is not None:
            return _replay(existing, contact, text)
    except IntegrityError:
        # The same key raced us and won; its reservation stands, ours was rolled back with this transaction.
        existing = OutboundMessage.objects.select_related("chip").get(idempotency_key=idempotency_key)
        return _replay(existing, contact, text)
    evolution = client or gateway_for_instance(decision.instance)
    try:
        message = _gateway_send(message, instance_name=decision.instance, gw=evolution)
    finally:
        if client is None:
            evolution.close()
    return SendOutcome(message=message, binding=decision.binding, replayed=False)


def outbound_record_direct(*, chip: Chip, instance: Instance, gw: Gateway, contact: str, text: str,
                           idempotency_key: str) -> str:
    """A message the pool itself sends on a given chip, outside routing (the opt-out confirmation): stored
    first, sent once; the same key twice sends nothing more. Returns the message's status."""
    try:
        with transaction.atomic():
            message = OutboundMessage.objects.create(idempotency_key=idempotency_key[:100], contact=contact,
                                                     chip=chip, text=text)
    except IntegrityError:
        return "duplicate"
    return _gateway_send(message, instance_name=instance.name, gw=gw).status


def send_success_observed(*, chip_id: int, message_id: str = "", now: datetime | None = None) -> None:
    """A send the gateway accepted, for the senders of contact traffic (the API's sends, the pool's own): the early
    warning counts it (a `sent` delivery event) and the chip's send circuit hears of it (a half-open circuit's
    trial passed: closed; a closed one forgets its failures). The warmer's batches tell the circuit only (its
    warming traffic is not the production figures). Never raises for Redis."""
    now = now or timezone.now()
    DeliveryEvent.objects.create(chip_id=chip_id, kind=DeliveryEvent.Kind.SENT, message_id=(message_id or "")[:64],
                                 occurred_at=now)
    circuit.circuit_success(chip_id=chip_id, now=now)


def send_failure_observed(*, chip_id: int, error: GatewayError, now: datetime | None = None) -> None:
    """What a failed send says about the chip, for every sender (the API's sends, the warmer's): the early warning
    counts it (a `send_failed` delivery event); a gateway failure counts toward the chip's send circuit (see
    instances.circuit); a dead socket takes the chip out of routing and asks for a restart; a 404 means the
    gateway lost the instance."""
    now = now or timezone.now()
    DeliveryEvent.objects.create(chip_id=chip_id, kind=DeliveryEvent.Kind.SEND_FAILED,
                                 detail=f"{error.kind} {error.status_code or ''}".strip()[:200], occurred_at=now)
    if circuit.counts_against_chip(error):
        circuit.circuit_failure(chip_id=chip_id, error=error, now=now)
    if error.kind not in ("connection_closed", "not_found"):
        return
    instance = Instance.objects.filter(chip_id=chip_id).first()
    if instance is None:
        return
    if error.kind == "not_found":
        sessions.session_gone(instance, now, source="send answered 404")
    else:
        sessions.session_socket_dead(instance, now)


def _replay(existing: OutboundMessage, contact: str, text: str) -> SendOutcome:
    if existing.contact != contact or existing.text != text:
        raise IdempotencyKeyReused(
            "This idempotency_key was already used for a different contact or text.", field="idempotency_key"
        )
    return SendOutcome(message=existing, binding="replayed", replayed=True)
