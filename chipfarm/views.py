"""POST /webhooks/slack/commands — the Slack slash command, a plain Django view (Slack's signature, not an API key)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from chipfarm.slack_commands import SlackCommand, SlackSignatureError, slack_command_run, slack_request_verify

logger = logging.getLogger(__name__)


@csrf_exempt
@require_POST
def slack_command(request: HttpRequest) -> JsonResponse:
    if not settings.SLACK_SIGNING_SECRET:
        return JsonResponse({"code": "slack_not_configured",
                             "message": _("Slack commands are off: SLACK_SIGNING_SECRET is not set.")}, status=503)
    # The signature (and its 5-minute window) is checked on the raw bytes before anything is parsed or written.
    try:
        slack_request_verify(secret=settings.SLACK_SIGNING_SECRET, headers=request.headers, body=request.body)
    except SlackSignatureError as exc:
        logger.warning("slack command rejected: %s", exc.reason)
        return JsonResponse({"code": "invalid_signature",
                             "message": _("Bad or stale Slack signature (%(reason)s).") % {"reason": exc.reason}},
                            status=401)
    reply = slack_command_run(command=SlackCommand.from_form(request.POST))
    return JsonResponse(reply.as_dict())
