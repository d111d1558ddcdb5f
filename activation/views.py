"""POST /webhooks/salvy (Svix-signed) and GET /health/chip-activator — plain Django views."""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from activation.salvy import salvy_event_parse
from activation.services import activator_health, sms_receive
from activation.signing import SignatureError, verify
from common.exceptions import InvalidInput

logger = logging.getLogger(__name__)


@csrf_exempt
@require_POST
def salvy_webhook(request: HttpRequest) -> JsonResponse:
    # The signature (and its 5-minute timestamp window) is checked on the raw bytes before anything is parsed
    # or written: a forged or replayed delivery leaves no trace but a log line.
    try:
        verify(settings.SALVY_WEBHOOK_SECRET, request.headers, request.body)
    except SignatureError as exc:
        logger.warning("salvy webhook rejected: %s", exc.reason)
        return JsonResponse({"code": "invalid_signature",
                             "message": _("Bad or stale Svix signature (%(reason)s).") % {"reason": exc.reason}},
                            status=401)
    try:
        event = salvy_event_parse(request.body)
    except InvalidInput as exc:
        return JsonResponse(exc.as_dict(), status=422)
    if event.sms is None:
        return JsonResponse({"status": "ignored", "type": event.type})
    # verify() found one of the two spellings of the message id; retries of one message share it.
    svix_id = (request.headers.get("svix-id") or request.headers.get("webhook-id") or "").strip()
    outcome = sms_receive(svix_id=svix_id, sms=event.sms)
    body: dict[str, object] = {"status": outcome.outcome}
    if outcome.job_id is not None:
        body["job_id"] = outcome.job_id
    return JsonResponse(body)


@require_GET
def health_chip_activator(request: HttpRequest) -> JsonResponse:
    """The VPS activator's health and queue size (API key required, like the API)."""
    from config.auth import api_key_for

    if api_key_for(request.headers.get("X-API-Key")) is None:
        return JsonResponse({"code": "unauthorized", "message": _("A valid X-API-Key header is required.")},
                            status=401)
    health = activator_health()
    if not health.is_up:
        return JsonResponse({"code": "activator_unavailable", "message": health.message, "activator": health.body},
                            status=503)
    return JsonResponse(health.body)
