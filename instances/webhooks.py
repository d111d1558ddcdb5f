"""Evolution webhooks: authenticate, deduplicate, and apply each event in one short transaction.

Everything here is database work only (no outbound HTTP), so the endpoint answers fast and Evolution's
at-least-once retries are harmless: a delivery is recorded under its dedup key in the same transaction
that applies it, so a failure leaves no receipt and the retry is processed; a success makes any retry a
no-op.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from chips.exceptions import InvalidInput, TransitionConflict, TransitionNotAllowed
from chips.models import Chip, ChipAlert
from chips.services import Actor, alert_raise, chip_transition
from instances.models import ChipCapacity, DeliveryEvent, Instance, OutboundMessage, WebhookReceipt
from instances.routing import bindings_release

logger = logging.getLogger(__name__)

BAN_CODES = {402, 403, 406}
LOGGED_OUT = 401
TIMELOCK_CODE = 463
ACK_KINDS = {
    "SERVER_ACK": DeliveryEvent.Kind.SERVER_ACK,
    "DELIVERY_ACK": DeliveryEvent.Kind.DELIVERED,
    "READ": DeliveryEvent.Kind.READ,
    "PLAYED": DeliveryEvent.Kind.READ,
    "ERROR": DeliveryEvent.Kind.FAILED,
}
ACTOR = Actor.webhook("evolution")


def secret_matches(header_value: str | None) -> bool:
    expected = settings.EVOLUTION_WEBHOOK_SECRET
    return bool(header_value) and hmac.compare_digest(header_value.encode(), expected.encode())


def parse_envelope(body: bytes) -> dict[str, Any]:
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("The body is not JSON.", field="body") from None
    if not isinstance(envelope, dict):
        raise InvalidInput("The body must be a JSON object.", field="body")
    for field in ("event", "instance"):
        if not isinstance(envelope.get(field), str) or not envelope[field]:
            raise InvalidInput(f"{field} is required.", field=field)
    data = envelope.get("data")
    if data is not None and not isinstance(data, dict):
        raise InvalidInput("data must be an object or null.", field="data")
    return envelope


def _dedup_key(envelope: dict[str, Any], body: bytes) -> str:
    """The event's own id where it has one (message key id + status), else a hash of the delivery."""
    event, instance, data = envelope["event"], envelope["instance"], envelope.get("data") or {}
    if event == "messages.update" and data.get("keyId"):
        return f"{event}:{instance}:{data['keyId']}:{data.get('status', '')}"[:200]
    if event == "messages.upsert" and isinstance(data.get("key"), dict) and data["key"].get("id"):
        return f"{event}:{instance}:{data['key']['id']}"[:200]
    return f"{event}:{instance}:{hashlib.sha256(body).hexdigest()}"[:200]


def _counted(process: Callable[..., str]) -> Callable[..., str]:
    """Count each delivery for /metrics by event (unknown events as "other") and outcome; never raises."""

    @functools.wraps(process)
    def counted(envelope: dict[str, Any], body: bytes, **kwargs: Any) -> str:
        from config import counters  # lazily: instances never imports config at module level

        event = envelope["event"] if envelope["event"] in HANDLERS else "other"
        try:
            outcome = process(envelope, body, **kwargs)
        except Exception:
            counters.incr("webhook_events", (event, "error"))
            raise
        counters.incr("webhook_events", (event, outcome))
        return outcome

    return counted


@_counted
def evolution_event_process(envelope: dict[str, Any], body: bytes, *, now: datetime | None = None) -> str:
    """Apply one delivery; returns what happened: processed, duplicate, unknown_instance or ignored."""
    now = now or timezone.now()
    event, name = envelope["event"], envelope["instance"]
    instance = Instance.objects.select_related("chip").filter(name=name).first()
    if instance is None:
        logger.warning("evolution webhook %s for unknown instance %s: ignored", event, name)
        return "unknown_instance"
    handler = HANDLERS.get(event)
    try:
        with transaction.atomic():
            WebhookReceipt.objects.create(dedup_key=_dedup_key(envelope, body), event=event, instance_name=name,
                                          received_at=now)
            if handler is None:
                return "ignored"
            handler(instance, envelope.get("data") or {}, now)
    except IntegrityError:
        return "duplicate"
    return "processed"


# --- handlers --------------------------------------------------------------------------------------------

def _set_state(instance: Instance, state: str, now: datetime) -> None:
    if instance.state != state:
        Instance.objects.filter(pk=instance.pk).update(state=state, state_changed_at=now, updated_at=now)
        logger.info("instance %s: %s → %s (webhook)", instance.name, instance.state, state)
        instance.state = state


def _set_connected(chip: Chip, connected: bool, now: datetime) -> None:
    # Plain field update: never touches the protected status column, so it cannot race a transition.
    Chip.objects.filter(pk=chip.pk).exclude(is_connected=connected).update(
        is_connected=connected, connection_changed_at=now, updated_at=now
    )


def on_connection_update(instance: Instance, data: dict[str, Any], now: datetime) -> None:
    state = str(data.get("state") or "")
    code = _int(data.get("statusReason"))
    chip = instance.chip
    if state == "open":
        _set_state(instance, Instance.State.OPEN, now)
        _set_connected(chip, True, now)
    elif state in ("connecting", "refused"):
        _set_state(instance, Instance.State.CONNECTING if state == "connecting" else Instance.State.REFUSED, now)
    elif state == "close":
        _set_state(instance, Instance.State.CLOSE, now)
        Instance.objects.filter(pk=instance.pk).update(last_disconnect_code=code, last_disconnect_at=now)
        _set_connected(chip, False, now)
        DeliveryEvent.objects.create(chip=chip, kind=DeliveryEvent.Kind.DISCONNECTED, detail=f"close {code}",
                                     occurred_at=now)
        if code in BAN_CODES:
            _ban(chip, code, now)
        elif code == LOGGED_OUT:
            alert_raise(kind="logged_out", severity=ChipAlert.Severity.CRITICAL, chip=chip,
                        message=_("Chip %(chip)s was logged out of WhatsApp (401): the device was unlinked. "
                                  "It needs a new QR scan.") % {"chip": chip},
                        action_taken=_("marked disconnected"))


def on_status_instance(instance: Instance, data: dict[str, Any], now: datetime) -> None:
    code = _int(data.get("disconnectionReasonCode"))
    if code is not None:
        Instance.objects.filter(pk=instance.pk).update(last_disconnect_code=code, last_disconnect_at=now,
                                                       updated_at=now)


def on_qrcode_updated(instance: Instance, data: dict[str, Any], now: datetime) -> None:
    qrcode = data.get("qrcode")
    if isinstance(qrcode, dict):
        Instance.objects.filter(pk=instance.pk).update(
            qr_code=str(qrcode.get("code") or ""), qr_image=str(qrcode.get("base64") or ""), qr_updated_at=now,
            updated_at=now,
        )
    elif data.get("statusCode"):
        alert_raise(kind="qr_limit", severity=ChipAlert.Severity.WARNING, chip=instance.chip,
                    message=_("Instance %(name)s: %(message)s.")
                    % {"name": instance.name, "message": data.get("message") or _("QR code limit reached")})


def on_messages_upsert(instance: Instance, data: dict[str, Any], now: datetime) -> None:
    key = data.get("key") if isinstance(data.get("key"), dict) else {}
    if key.get("fromMe"):
        return  # typed on the phone: not an inbound reply
    DeliveryEvent.objects.create(chip=instance.chip, kind=DeliveryEvent.Kind.INBOUND,
                                 message_id=str(key.get("id") or "")[:64],
                                 remote=str(key.get("remoteJid") or "").split("@")[0][:32], occurred_at=now)


def on_messages_update(instance: Instance, data: dict[str, Any], now: datetime) -> None:
    status = str(data.get("status") or "")
    key_id = str(data.get("keyId") or "")[:64]
    detail = str(data.get("errorMessage") or "")[:200]
    chip = instance.chip
    if _int(data.get("errorCode")) == TIMELOCK_CODE:
        _restrict(chip, key_id, detail, now)
        status = "ERROR"
    elif status in ACK_KINDS:
        DeliveryEvent.objects.create(chip=chip, kind=ACK_KINDS[status], message_id=key_id, detail=detail,
                                     occurred_at=now)
    if key_id:
        _apply_ack(key_id, status, now)


def _restrict(chip: Chip, key_id: str, detail: str, now: datetime) -> None:
    """WhatsApp's reach-out timelock: the chip may keep its conversations but reach no new contact."""
    until = now + timedelta(hours=settings.TIMELOCK_HOURS)
    ChipCapacity.objects.get_or_create(chip=chip)
    ChipCapacity.objects.filter(chip=chip).update(restricted_until=until, updated_at=now)
    DeliveryEvent.objects.create(chip=chip, kind=DeliveryEvent.Kind.TIMELOCK, message_id=key_id, detail=detail,
                                 occurred_at=now)
    alert_raise(kind="timelock", severity=ChipAlert.Severity.WARNING, chip=chip,
                message=_("Chip %(chip)s hit WhatsApp's reach-out timelock (463): no new contacts until %(until)s UTC.")
                % {"chip": chip, "until": f"{until:%Y-%m-%d %H:%M}"},
                action_taken=_("restricted from new contacts"))


def _apply_ack(key_id: str, status: str, now: datetime) -> None:
    S = OutboundMessage.Status
    qs = OutboundMessage.objects.filter(evolution_message_id=key_id)
    if status == "DELIVERY_ACK":
        qs.exclude(status=S.READ).update(status=S.DELIVERED, delivered_at=now, updated_at=now)
    elif status in ("READ", "PLAYED"):
        qs.update(status=S.READ, read_at=now, updated_at=now)
    elif status == "ERROR":
        qs.update(status=S.FAILED, error="WhatsApp reported a delivery error", updated_at=now)


def _ban(chip: Chip, code: int | None, now: datetime) -> None:
    if chip.status in Chip.LIVE_STATES:
        try:
            chip_transition(chip=chip.pk, transition="ban", actor=ACTOR,
                            reason=f"Evolution closed the session with final code {code}")
        except (TransitionNotAllowed, TransitionConflict) as exc:
            logger.warning("could not ban chip %s: %s", chip.pk, exc.message)
    released = bindings_release(chip_id=chip.pk, reason=f"chip banned ({code})", now=now)
    alert_raise(kind="banned", severity=ChipAlert.Severity.CRITICAL, chip=chip,
                message=_("Chip %(chip)s was banned by WhatsApp (close code %(code)s).") % {"chip": chip, "code": code},
                action_taken=_("chip marked banned; %(n)d contact bindings released") % {"n": released})


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


HANDLERS = {
    "connection.update": on_connection_update,
    "status.instance": on_status_instance,
    "qrcode.updated": on_qrcode_updated,
    "messages.upsert": on_messages_upsert,
    "messages.update": on_messages_update,
}
