"""The one NinjaAPI, mounted at /api/. Every error leaves it as JSON `{code, message}`."""

from __future__ import annotations

import logging

from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI, Router
from ninja.errors import AuthenticationError, HttpError, ValidationError

from chipfarm.api import router as pool_router
from chips.api import router as chips_router
from common.exceptions import DomainError
from config.auth import ApiKeyAuth
from instances.api import router as instances_router
from outbox.api import router as outbox_router

logger = logging.getLogger(__name__)

api = NinjaAPI(
    title="chipfarm",
    version="1",
    description="The back office of a pool of WhatsApp numbers. Authenticate with the X-API-Key header.",
    urls_namespace="api",
    docs_url="/docs",
    auth=ApiKeyAuth(),
)
api.add_router("/v1/chips", chips_router)
api.add_router("/v1", instances_router)
api.add_router("/v1", pool_router)
api.add_router("/v1", outbox_router)

# Last, so it only sees what no operation matched: an unknown path under /api/ is a JSON 404 like every other
# error, not Django's HTML page (a chip id with an encoded "/" in it lands here too).
fallback_router = Router(auth=None)


@fallback_router.api_operation(["GET", "POST", "PUT", "PATCH", "DELETE"], "/{path:unmatched}",
                               include_in_schema=False)
def _no_such_endpoint(request: HttpRequest, unmatched: str) -> HttpResponse:
    raise Http404(f"No API endpoint at /api/{unmatched}.")


api.add_router("", fallback_router)


def error_response(request: HttpRequest, status: int, code: str, message: str, **extra) -> HttpResponse:
    return api.create_response(request, {"code": code, "message": message, **extra}, status=status)


@api.exception_handler(DomainError)
def _domain_error(request: HttpRequest, exc: DomainError) -> HttpResponse:
    body = exc.as_dict()
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        body["retry_after"] = retry_after
    response = api.create_response(request, body, status=exc.status_code)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    first = exc.errors[0] if exc.errors else {}
    # loc is ("body", "payload", "field") or ("query", "field"): the last item names the field.
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "payload", "query", "path")]
    field = ".".join(loc) or None
    message = f"{field}: {first.get('msg', 'invalid')}" if field else str(first.get("msg", "invalid input"))
    errors = [
        {"field": ".".join(str(p) for p in e.get("loc", ())[1:]), "message": e.get("msg", "")}
        for e in exc.errors
    ]
    return error_response(request, 422, "invalid_input", message, field=field, errors=errors)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return error_response(request, 401, "unauthorized", "A valid X-API-Key header is required.")


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if exc.status_code == 400:
        # ninja's "Cannot parse request body": malformed input, answered like every other bad input.
        return error_response(request, 422, "invalid_input", f"body: {exc}", field="body", errors=[])
    return error_response(request, exc.status_code, "http_error", str(exc))


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(request, 404, "not_found", str(exc) or "Not found.")


@api.exception_handler(Exception)
def _unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    logger.exception("unhandled error in %s %s", request.method, request.path)
    return error_response(request, 500, "internal_error", "Something went wrong; it was logged.")
