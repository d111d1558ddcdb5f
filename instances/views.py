"""POST /webhooks/evolution — plain Django: a shared secret, not an API key."""

import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

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
