"""POST /webhooks/evolution — plain Django: a shared secret, not an API key."""

import logging

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from common.exceptions import InvalidInput
from instances.webhooks import evolution_event_process, parse_envelope, secret_matches

logger = logging.getLogger(__name__)


@csrf_exempt
@require_POST
def evolution_webhook(request: HttpRequest) -> JsonResponse:
    # The secret is checked before anything is parsed or written (constant-time comparison).
    if not secret_matches(request.headers.get("X-Webhook-Secret")):
        return JsonResponse({"code": "unauthorized", "message": "Bad or missing X-Webhook-Secret."}, status=401)
    try:
        envelope = parse_envelope(request.body)
    except InvalidInput as exc:
        return JsonResponse(exc.as_dict(), status=422)
    outcome = evolution_event_process(envelope, request.body)
    return JsonResponse({"status": outcome})


@require_GET
def activation_link(request: HttpRequest, token: str) -> HttpResponse:
    """GET /activation/link/{token}: the current QR of one linking — a PNG, or JSON with the pairing code.

    The token is the only credential (contracts/chip-activator.md, last section): no gateway key leaves the pool.
    """
    from common.exceptions import DomainError
    from instances.linking import link_current

    try:
        code = link_current(token=token)
    except DomainError as exc:
        response = JsonResponse(exc.as_dict(), status=exc.status_code)
        if exc.status_code == 503:
            response["Retry-After"] = "2"
        return response
    wants_json = "application/json" in request.headers.get("Accept", "")
    if wants_json:
        response = JsonResponse({"code": code.code, "pairing_code": code.pairing_code,
                                 "expires_at": code.expires_at.isoformat() if code.expires_at else None,
                                 "state": code.state})
    elif code.code is None:
        response = JsonResponse({"code": "no_code_yet", "message": "The gateway has no QR code yet; retry shortly."},
                                status=503)
        response["Retry-After"] = "2"
    else:
        response = HttpResponse(code.png(), content_type="image/png")
    response["Cache-Control"] = "no-store"
    return response
