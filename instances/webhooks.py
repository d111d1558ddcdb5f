"""Gateway webhooks: authenticate, store message events for the drain (instances.inbox), apply state events.

Everything here is database work only (no outbound HTTP), so the endpoint answers fast. Any authenticated,
well-formed envelope is answered 2xx whatever its ``data`` holds — arrays for ``chats.upsert`` and friends, null,
shapes we do not use (field notes §4): a 4xx would make Evolution drop or retry a real event.

Message events have an id of their own (the message key, plus the receipt status): the webhook stores each once
(a receipt row, `ON CONFLICT DO NOTHING`, so a retry is a no-op) and the drain applies it right after, in
order per instance; the handlers below are what it runs. State events (``connection.update``, ``qrcode.updated``,
``status.instance``, ...) have none — their body changes with ``date_time``, so hashing it would store every one of
the ``connecting`` events a stuck instance sends twice a second — and are applied idempotently instead.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from chips.models import ChipAlert
from chips.services import alert_raise
from common.batch import insert_later
from common.exceptions import InvalidInput
from common.inbound import parse_json_body
from common.statements import StatementCache
from common.texts import Text
from instances import inbox, sessions
from instances.contacts import remote_identity
from instances.inbound import inbound_receive
from instances.models import DeliveryEvent, Instance, OutboundMessage
from instances.restriction import explicit_code, receipt_failed
from instances.services import message_status_emit
from outbox.services import event_wanted

logger = logging.getLogger(__name__)

ACK_KINDS = {
    "SERVER_ACK": DeliveryEvent.Kind.SERVER_ACK,
    "DELIVERY_ACK": DeliveryEvent.Kind.DELIVERED,
    "READ": DeliveryEvent.Kind.READ,
    "PLAYED": DeliveryEvent.Kind.READ,
}
SOURCE = "evolution"


def secret_matches(header_value: str | None) -> bool:
    expected = settings.EVOLUTION_WEBHOOK_SECRET
    return bool(header_value) and hmac.compare_digest(header_value.encode(), expected.encode())


def parse_envelope(body: bytes) -> dict[str, Any]:
    """The envelope, NUL characters stripped. InvalidInput (4xx) for a body that is not a JSON object with a
    string ``event`` and ``instance``; ``data`` may hold anything."""
    envelope = parse_json_body(body, strip_nuls=True)
    if not isinstance(envelope, dict):
        raise InvalidInput(_("The body must be a JSON object."), field="body")
    for field in ("event", "instance"):
        if not isinstance(envelope.get(field), str) or not envelope[field]:
            raise InvalidInput(_("%(field)s is required.") % {"field": field}, field=field)
    return envelope


def _dedup_key(event: str, instance: str, data: Any) -> str | None:
    """The event's own id (a message's key id, plus the status of a receipt), or None for state events."""
    if not isinstance(data, dict):
        return None
    if event == "messages.update" and data.get("keyId"):
        return f"{event}:{instance}:{data['keyId']}:{data.get('status', '')}"[:200]
    key = data.get("key")
    if event in ("messages.upsert", "send.message") and isinstance(key, dict) and key.get("id"):
        return f"{event}:{instance}:{key['id']}"[:200]
    return None


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
    """Take one delivery; returns what happened: accepted (a message event, stored for the drain), processed (a
    state event, applied now), duplicate, unknown_instance or ignored."""
    now = now or timezone.now()
    event, name = envelope["event"], envelope["instance"][:64]
    handler = HANDLERS.get(event)
    if handler is None:
        return "ignored"
    data = envelope.get("data")
    if event in inbox.QUEUED_EVENTS:
        outcome = inbox.receipt_store(name=name, event=event, key=_dedup_key(event, name, data), data=data, now=now)
    else:
        instance_id = inbox.instance_id_for(name)
        if (instance_id is not None and event == "connection.update"
                and not sessions.session_report_is_news(instance_id, _state_of(data), now)):
            outcome = "processed"  # nothing would change: nothing more to load, no transaction
        else:
            instance = (Instance.objects.select_related("chip").filter(pk=instance_id).first()
                        if instance_id is not None else None)
            if instance is None:
                outcome = "unknown_instance"
            else:
                with transaction.atomic():
                    handler(instance, data, now)
                outcome = "processed"
    if outcome == "unknown_instance":
        logger.warning("gateway webhook %s for unknown instance %s: ignored", event, name)
    return outcome


# --- handlers: each takes whatever `data` holds and ignores what it does not use ----------------------------

def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _when(value: Any, fallback: datetime) -> datetime:
    """A gateway timestamp of a database row (true UTC); the envelope's `date_time` is never trusted (§3.3)."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return fallback
        return parsed if parsed.tzinfo else fallback
    return fallback


def _state_of(data: Any) -> str:
    return str(data.get("state") or "") if isinstance(data, dict) else ""


def on_connection_update(instance: Instance, data: Any, now: datetime) -> None:
    state = _state_of(data)
    if state == "open":
        sessions.session_opened(instance, now)
    elif state == "connecting":
        sessions.session_connecting(instance, now)
    elif state == "refused":
        sessions.session_state_read(instance, Instance.State.REFUSED, now)
    elif state == "close":
        sessions.session_closed(instance, code=_int(data.get("statusReason")), now=now, source=SOURCE)


def on_status_instance(instance: Instance, data: Any, now: datetime) -> None:
    if not isinstance(data, dict):
        return
    code = _int(data.get("disconnectionReasonCode"))
    if code in sessions.FINAL_CODES:
        sessions.session_closed(instance, code=code, at=_when(data.get("disconnectionAt"), now), now=now,
                                source=SOURCE)


def on_remove_instance(instance: Instance, data: Any, now: datetime) -> None:
    sessions.session_gone(instance, now, source="remove.instance webhook")


def on_qrcode_updated(instance: Instance, data: Any, now: datetime) -> None:
    if not isinstance(data, dict):
        return
    qrcode = data.get("qrcode")
    if isinstance(qrcode, dict):
        Instance.objects.filter(pk=instance.pk).update(
            qr_code=str(qrcode.get("code") or "")[:2000], qr_image=str(qrcode.get("base64") or ""),
            qr_updated_at=now, updated_at=now)
        sessions.session_connecting(instance, now)
    elif data.get("statusCode"):
        alert_raise(kind="qr_limit", severity=ChipAlert.Severity.WARNING, chip=instance.chip,
                    message=Text("alert.qr_limit", name=instance.name, message=str(data.get("message") or "")[:200]),
                    action_taken=Text("action.ask_new_link"))


def on_messages_upsert(instance: Instance, data: Any, now: datetime) -> None:
    if not isinstance(data, dict):
        return
    key = data.get("key") if isinstance(data.get("key"), dict) else {}
    if key.get("fromMe"):
        return  # typed on the phone: not an inbound reply
    phone, lid = remote_identity(key, now=now)
    inbound_receive(chip=instance.chip, data=data, key=key, phone=phone, lid=lid, now=now)


def on_messages_update(instance: Instance, data: Any, now: datetime) -> None:
    if not isinstance(data, dict):
        return
    status = str(data.get("status") or "")
    key_id = str(data.get("keyId") or "")[:64]
    chip = instance.chip
    coded = explicit_code(data)
    if status == "ERROR" or coded:
        remote = str(data.get("remoteJid") or "").split("@", 1)[0]
        receipt_failed(chip=chip, key_id=key_id, remote=remote, now=now, coded=coded)
        status = "ERROR"
    elif status in ACK_KINDS:
        # Read only by the daily figures, never while a batch runs: inserted with the batch's others.
        insert_later(DeliveryEvent(chip=chip, kind=ACK_KINDS[status], message_id=key_id, occurred_at=now))
    if key_id:
        _apply_ack(key_id, status, now)


def _ack_update(status: str, now: datetime) -> tuple[dict[str, Any], list[str]] | None:
    """What a receipt of `status` writes on our message at `now`, and the statuses it leaves alone (never backwards:
    a late DELIVERY_ACK after READ changes nothing); None for a status that moves nothing."""
    S = OutboundMessage.Status  # noqa: N806
    if status == "DELIVERY_ACK":
        return {"status": S.DELIVERED, "delivered_at": now, "updated_at": now}, [S.READ, S.DELIVERED]
    if status in ("READ", "PLAYED"):
        return {"status": S.READ, "read_at": now, "updated_at": now}, [S.READ]
    if status == "ERROR":
        return {"status": S.FAILED, "error": "WhatsApp reported a delivery error", "updated_at": now}, [S.FAILED]
    return None


def _ack_statement(status: str, *, now: datetime, key_id: str) -> tuple[str, list]:
    """The receipt's UPDATE of our message (`_ack_update`), compiled from the ORM, answering the rows it moved."""
    from django.db.models.sql import UpdateQuery

    values, unless = _ack_update(status, now)
    query = OutboundMessage.objects.filter(evolution_message_id=key_id).exclude(status__in=unless).query
    query = query.chain(UpdateQuery)
    query.add_update_values(values)
    sql, params = query.get_compiler(connection=connection).as_sql()
    return f"{sql} RETURNING {OutboundMessage._meta.db_table}.id", list(params)


_ACK = StatementCache(_ack_statement)


def _apply_ack(key_id: str, status: str, now: datetime) -> None:
    """Move our message on by its receipt (`_ack_update`: one prepared statement) and tell the business app
    (`message.status`)."""
    if _ack_update(status, now) is None:
        return
    rows, _names = _ACK.fetch(status, now=now, key_id=key_id)
    if rows and event_wanted("message.status"):  # the rows are read only for an app that listens
        for message in OutboundMessage.objects.filter(pk__in=[pk for (pk,) in rows]):
            message_status_emit(message, at=now)


HANDLERS: dict[str, Callable[[Instance, Any, datetime], None]] = {
    "connection.update": on_connection_update,
    "status.instance": on_status_instance,
    "remove.instance": on_remove_instance,
    "qrcode.updated": on_qrcode_updated,
    "messages.upsert": on_messages_upsert,
    "messages.update": on_messages_update,
}
