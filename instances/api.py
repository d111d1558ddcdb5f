"""/api/v1/route, /api/v1/messages, /api/v1/pool/pause|resume."""

from django.http import HttpRequest
from ninja import Router, Status

from chips.schemas import AUTH_RESPONSES, ErrorOut
from instances import routing, services
from instances.models import RoutingPolicy
from instances.schemas import (
    ContactIn,
    MessageIn,
    MessageOut,
    PauseIn,
    RefusalOut,
    ResumeIn,
    RouteOut,
    SwitchOut,
)

router = Router(tags=["routing"])


@router.post("/route", response={200: RouteOut, **AUTH_RESPONSES, 422: ErrorOut, 503: RefusalOut},
             summary="Pick the chip for a contact and reserve one message of its capacity")
def route(request: HttpRequest, payload: ContactIn):
    return routing.route_contact(contact=payload.contact)


def _message_out(outcome: services.SendOutcome) -> dict:
    m = outcome.message
    return {
        "message_id": m.pk, "idempotency_key": m.idempotency_key, "contact": m.contact, "chip_id": m.chip_id,
        "phone": m.chip.phone, "instance": m.chip.instance_name, "status": m.status,
        "evolution_message_id": m.evolution_message_id, "error": m.error, "created_at": m.created_at,
    }


@router.post("/messages", response={201: MessageOut, 200: MessageOut, 202: MessageOut, **AUTH_RESPONSES,
                                    409: ErrorOut, 422: ErrorOut, 502: MessageOut, 503: RefusalOut},
             summary="Send a text once (a repeated idempotency_key answers the first result)")
def send_message(request: HttpRequest, payload: MessageIn):
    outcome = services.message_send(contact=payload.contact, text=payload.text,
                                    idempotency_key=payload.idempotency_key)
    status = {"sent": 201, "delivered": 201, "read": 201, "failed": 502, "sending": 202}[outcome.message.status]
    return Status(status, _message_out(outcome))


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
