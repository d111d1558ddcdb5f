"""/api/v1/route, /api/v1/messages, /api/v1/pool/pause|resume."""

from django.http import HttpRequest
from ninja import Query, Router, Status

from chips.schemas import AUTH_RESPONSES, ErrorOut
from common.exceptions import InvalidInput
from instances import optouts, routing, selectors, services
from instances.models import RoutingPolicy
from instances.phones import normalize_contact
from instances.schemas import (
    ContactOut,
    MessageIn,
    MessageOut,
    MessageQuery,
    PauseIn,
    RefusalOut,
    ResumeIn,
    RouteIn,
    RouteOut,
    SuppressionIn,
    SuppressionOut,
    SwitchOut,
)

router = Router(tags=["routing"])


@router.post("/route", response={200: RouteOut, **AUTH_RESPONSES, 409: ErrorOut, 422: ErrorOut, 503: RefusalOut},
             summary="Pick the chip for a contact and reserve one message of its capacity")
def route(request: HttpRequest, payload: RouteIn):
    return routing.contact_route(contact=payload.contact, kind=payload.kind)


def _message_out(outcome: services.SendOutcome) -> dict:
    m = outcome.message
    return {
        "message_id": m.pk, "idempotency_key": m.idempotency_key, "contact": m.contact, "chip_id": m.chip_id,
        "phone": m.chip.phone, "instance": m.chip.instance_name, "status": m.status,
        "evolution_message_id": m.evolution_message_id, "error": m.error, "created_at": m.created_at,
        "sent_at": m.sent_at, "delivered_at": m.delivered_at, "read_at": m.read_at,
    }


@router.post("/messages", response={201: MessageOut, 200: MessageOut, 202: MessageOut, **AUTH_RESPONSES,
                                    409: ErrorOut, 422: ErrorOut, 429: RefusalOut, 502: MessageOut,
                                    503: RefusalOut},
             summary="Send a text once (a repeated idempotency_key answers the first result)",
             description="409 duplicate_content: the same text went to the contact within 24 h; 429 "
                         "contact_rate_limited: the contact already got CONTACT_MAX_PER_HOUR messages this hour "
                         "(Retry-After). Neither reserves capacity.")
def send_message(request: HttpRequest, payload: MessageIn):
    outcome = services.message_send(contact=payload.contact, text=payload.text, kind=payload.kind,
                                    idempotency_key=payload.idempotency_key)
    status = {"sent": 201, "delivered": 201, "read": 201, "failed": 502, "sending": 202}[outcome.message.status]
    return Status(status, _message_out(outcome))


@router.get("/messages/{message_id}", response={200: MessageOut, **AUTH_RESPONSES, 404: ErrorOut, 422: ErrorOut},
            summary="A message's status, chip, timestamps and failure reason")
def get_message(request: HttpRequest, message_id: int):
    return _message_out(services.SendOutcome(message=selectors.message_get(message_id=message_id), binding="",
                                             replayed=True))


@router.get("/messages", response={200: MessageOut, **AUTH_RESPONSES, 404: ErrorOut, 422: ErrorOut},
            summary="A message by the idempotency key it was sent with")
def find_message(request: HttpRequest, filters: Query[MessageQuery]):
    return _message_out(services.SendOutcome(
        message=selectors.message_get(idempotency_key=filters.idempotency_key), binding="", replayed=True))


@router.get("/contacts/{contact}", response={200: ContactOut, **AUTH_RESPONSES, 422: ErrorOut},
            summary="A contact's current chip and number, binding, opt-out and last inbound message")
def get_contact(request: HttpRequest, contact: str):
    return selectors.contact_detail(contact=_contact(contact))


@router.post("/suppressions", response={201: SuppressionOut, 200: SuppressionOut, **AUTH_RESPONSES, 422: ErrorOut},
             summary="Opt a contact out, pool-wide (nothing but replies reaches them)")
def add_suppression(request: HttpRequest, payload: SuppressionIn):
    row, created = optouts.suppression_add(contact=payload.contact, source="api", by=f"api:{request.auth.name}",
                                           reason=payload.reason)
    return Status(201 if created else 200, {"contact": row.contact, "opted_out": True, "reason": row.reason,
                                            "source": row.source, "created_at": row.created_at})


@router.delete("/suppressions/{contact}", response={204: None, **AUTH_RESPONSES, 404: ErrorOut, 422: ErrorOut},
               summary="Lift a contact's opt-out")
def delete_suppression(request: HttpRequest, contact: str):
    optouts.suppression_lift(contact=_contact(contact), by=f"api:{request.auth.name}", missing_ok=False)
    return Status(204, None)


def _contact(raw: str) -> str:
    try:
        return normalize_contact(raw)
    except ValueError as exc:
        raise InvalidInput(f"contact: {exc}", field="contact") from None


def _switch_out(policy: RoutingPolicy) -> dict:
    return {"paused": policy.is_paused, "reason": policy.paused_reason, "by": policy.paused_by,
            "at": policy.paused_at}


@router.post("/pool/pause", response={200: SwitchOut, **AUTH_RESPONSES, 422: ErrorOut},
             summary="Kill switch: stop all sending")
def pause(request: HttpRequest, payload: PauseIn):
    return _switch_out(services.sending_pause(reason=payload.reason, by=f"api:{request.auth.name}"))


@router.post("/pool/resume", response={200: SwitchOut, **AUTH_RESPONSES, 422: ErrorOut}, summary="Resume sending")
def resume(request: HttpRequest, payload: ResumeIn | None = None):
    policy = services.sending_resume(by=f"api:{request.auth.name}")
    # Who lifted the switch, and when: the policy's pause fields are cleared into the history.
    last = services.sending_last_switch()
    if policy.is_paused or last is None or last.is_open:
        return _switch_out(policy)
    return {"paused": False, "reason": last.reason, "by": last.resumed_by, "at": last.resumed_at}
