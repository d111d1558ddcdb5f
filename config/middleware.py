"""The request id: one per request, in every log line it causes and in the `X-Request-ID` response header."""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import middleware as auth_middleware
from django.contrib.messages import middleware as message_middleware
from django.contrib.sessions import middleware as session_middleware
from django.core.signals import request_finished
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.middleware import locale
from django.utils import translation

from config.logging import request_id

# A caller's (or a proxy's) id is kept only if it is a short plain token; anything else could forge
# or break log lines, so it is replaced.
_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def request_id_for(header_value: str | None) -> str:
    if header_value and _SANE.match(header_value):
        return header_value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """First in MIDDLEWARE, so every later middleware and the view log with the id."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = request_id_for(request.headers.get("X-Request-ID"))
        request.request_id = rid
        # Not reset on the way out: Django logs "Not Found"/"Internal Server Error" (django.request) after
        # the middleware chain returns. It is cleared when the response is closed (below), and the next
        # request on this thread sets its own.
        request_id.set(rid)
        response = self.get_response(request)
        response["X-Request-ID"] = rid
        return response


@receiver(request_finished, dispatch_uid="config.middleware.clear_request_id")
def _clear_request_id(**kwargs) -> None:
    request_id.set(None)


class MachineBodyLimitMiddleware:
    """The API and the webhooks answer an oversized body with a JSON 413 (Django's own refusal is an HTML 400).

    Django raises RequestDataTooBig when `request.body` is read past DATA_UPLOAD_MAX_MEMORY_SIZE; reading it here,
    before the view, turns that into the `{code, message}` every machine client gets for bad input.
    """

    PREFIXES = ("/api/", "/webhooks/", "/activation/")

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method in ("POST", "PUT", "PATCH", "DELETE") and request.path.startswith(self.PREFIXES):
            from django.core.exceptions import RequestDataTooBig
            from django.http import JsonResponse

            try:
                request.body  # noqa: B018 - read once, here, so the limit is enforced before the view
            except RequestDataTooBig:
                return JsonResponse({"code": "body_too_large", "message": "The request body is too large.",
                                     "field": "body"}, status=413)
        return self.get_response(request)


# --- the gateways' webhooks pass by what only a person's browser needs ---------------------------------------

#: The endpoints only the gateways post to (Evolution's events, Salvy's): authenticated by a shared secret or a
#: signature, never by a session or a cookie, answered with JSON no browser renders. They are the pool's busiest
#: door (every message event of every chip), so the middleware that serves people — sessions, the user, flash
#: messages, the language of Accept-Language — lets them pass untouched (a fifth of a webhook's time in Django).
#: Host validation (CommonMiddleware), CSRF (the webhooks are exempt), the framing and security headers and the
#: request id still apply: `check --deploy` asks for Django's own CSRF and clickjacking middleware by name.
GATEWAY_WEBHOOKS = ("webhook-evolution", "webhook-salvy")  # their names in config.urls


@functools.cache
def gateway_webhook_paths() -> frozenset[str]:
    from django.urls import reverse

    return frozenset(reverse(name) for name in GATEWAY_WEBHOOKS)


def is_gateway_webhook(request: HttpRequest) -> bool:
    return request.path_info in gateway_webhook_paths()


class PassesGatewayWebhooks:
    """Mixed into a browser middleware (first): a gateway webhook request goes straight to the next layer."""

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if is_gateway_webhook(request):
            return self.get_response(request)
        return super().__call__(request)


class SessionMiddleware(PassesGatewayWebhooks, session_middleware.SessionMiddleware):
    pass


class AuthenticationMiddleware(PassesGatewayWebhooks, auth_middleware.AuthenticationMiddleware):
    pass


class MessageMiddleware(PassesGatewayWebhooks, message_middleware.MessageMiddleware):
    pass


class LocaleMiddleware(locale.LocaleMiddleware):
    """A gateway webhook is answered in the site's language (LANGUAGE_CODE), whatever its headers say or the
    thread's previous request chose."""

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if is_gateway_webhook(request):
            translation.activate(settings.LANGUAGE_CODE)
            return self.get_response(request)
        return super().__call__(request)
