"""/api/v1/endpoints: consumer webhook subscriptions (Standard Webhooks) and a test ping."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router, Status

from outbox import selectors, services
from outbox.models import Endpoint
from outbox.schemas import (
    AttemptOut,
    EndpointCreatedOut,
    EndpointDetailOut,
    EndpointIn,
    EndpointOut,
    EndpointPatch,
    ErrorOut,
    PingOut,
)

router = Router(tags=["webhooks"])
AUTH = {401: ErrorOut}


def _detail(endpoint: Endpoint) -> dict:
    data = EndpointOut.model_validate(endpoint).model_dump()
    data["recent_attempts"] = [
        AttemptOut(event_id=a.delivery.event.event_id, event_type=a.delivery.event.type, attempted_at=a.attempted_at,
                   status_code=a.status_code, error=a.error, duration_ms=a.duration_ms, is_success=a.is_success)
        for a in selectors.endpoint_recent_attempts(endpoint=endpoint)
    ]
    return data


def _actor(request: HttpRequest) -> str:
    return f"API key {request.auth.name}"


@router.get("/endpoints", response={200: list[EndpointOut], **AUTH}, summary="List consumer endpoints")
def list_endpoints(request: HttpRequest):
    return selectors.endpoint_list()


@router.post("/endpoints", response={201: EndpointCreatedOut, **AUTH, 422: ErrorOut},
             summary="Subscribe a consumer endpoint (the answer carries its secret, shown once)")
def create_endpoint(request: HttpRequest, payload: EndpointIn):
    endpoint = services.endpoint_create(url=payload.url, event_types=payload.event_types,
                                        description=payload.description, is_enabled=payload.is_enabled)
    return Status(201, endpoint)


# `{endpoint_id}`, not `{int:endpoint_id}`: a malformed id is a JSON 422 from the API, not Django's HTML 404.
@router.get("/endpoints/{endpoint_id}", response={200: EndpointDetailOut, **AUTH, 404: ErrorOut, 422: ErrorOut},
            summary="A consumer endpoint with its recent delivery attempts")
def get_endpoint(request: HttpRequest, endpoint_id: int):
    return _detail(selectors.endpoint_get(endpoint_id=endpoint_id))


@router.patch("/endpoints/{endpoint_id}", response={200: EndpointDetailOut, **AUTH, 404: ErrorOut, 422: ErrorOut},
              summary="Change a consumer endpoint (only the fields given)")
def update_endpoint(request: HttpRequest, endpoint_id: int, payload: EndpointPatch):
    changes = payload.model_dump(exclude_unset=True)
    endpoint = services.endpoint_update(endpoint=endpoint_id, actor=_actor(request),
                                        **{k: v for k, v in changes.items() if v is not None})
    return _detail(endpoint)


@router.delete("/endpoints/{endpoint_id}", response={204: None, **AUTH, 404: ErrorOut, 422: ErrorOut},
               summary="Delete a consumer endpoint and its deliveries")
def delete_endpoint(request: HttpRequest, endpoint_id: int):
    services.endpoint_delete(endpoint=endpoint_id)
    return Status(204, None)


@router.post("/endpoints/{endpoint_id}/test",
             response={202: PingOut, **AUTH, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut},
             summary="Send a ping event to this endpoint only")
def test_endpoint(request: HttpRequest, endpoint_id: int):
    delivery = services.endpoint_test(endpoint=endpoint_id)
    return Status(202, {"event_id": delivery.event.event_id, "delivery_id": delivery.pk, "status": delivery.status})
