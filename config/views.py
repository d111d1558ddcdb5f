"""Health views outside the API (no NinjaAPI auth, no /api prefix)."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Liveness: one database round trip."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any database failure means "not alive"
        return JsonResponse({"status": "error", "database": "down", "error": exc.__class__.__name__},
                            status=503)
    return JsonResponse({"status": "ok", "database": "ok"})


@require_GET
def health_chips(request: HttpRequest) -> JsonResponse:
    """Pool counts and health (no auth: no phone numbers, only counts)."""
    from chipfarm.pool import pool_status

    status = pool_status()
    code = 503 if status.health == "critical" else 200
    return JsonResponse({"health": status.health, "reasons": status.reasons, "counts": status.counts,
                         "deficits": status.deficits, "pipeline": status.pipeline}, status=code)


@require_GET
def health_instances(request: HttpRequest) -> JsonResponse:
    """Instance connection summary (API key required, like the API)."""
    from config.auth import api_key_for
    from instances.health import instances_summary

    if api_key_for(request.headers.get("X-API-Key")) is None:
        return JsonResponse({"code": "unauthorized", "message": "A valid X-API-Key header is required."},
                            status=401)
    return JsonResponse(instances_summary())
