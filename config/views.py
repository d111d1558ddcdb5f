"""Health views outside the API (no NinjaAPI auth, no /api prefix)."""

from __future__ import annotations

import time
from datetime import datetime

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

CYCLE_KEY = "orchestrator:last_cycle"  # written by chipfarm.orchestrator._mark_cycle


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
        # The same words, and language, as /health/chip-activator (activation.views).
        return JsonResponse({"code": "unauthorized", "message": _("A valid X-API-Key header is required.")},
                            status=401)
    return JsonResponse(instances_summary())


def _timed(check) -> dict:
    started = time.perf_counter()
    try:
        result = {"ok": True, **(check() or {})}
    except Exception as exc:  # the check names what failed; the others still run
        result = {"ok": False, "error": f"{exc.__class__.__name__}: {exc}"[:300]}
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _redis() -> None:
    from config.counters import redis_client

    # The cache's own client: same server and 2 s socket timeouts, so a dead Redis answers fast.
    if not redis_client().ping():
        raise ConnectionError("PING was not answered")


def _age(value: object, max_age: int, now: datetime) -> dict:
    if not value:
        return {"ok": False, "error": "never recorded", "max_age_seconds": max_age}
    try:
        at = datetime.fromisoformat(str(value))
        age = max(0, int((now - at).total_seconds()))  # a clock a little ahead is not "negative age"
    except (TypeError, ValueError):
        return {"ok": False, "error": f"unreadable time {str(value)[:40]!r}", "max_age_seconds": max_age}
    result = {"ok": age <= max_age, "last_at": at.isoformat(), "age_seconds": age, "max_age_seconds": max_age}
    if not result["ok"]:
        result["error"] = f"last recorded {age} s ago (more than {max_age} s)"
    return result


@require_GET
def health_deep(request: HttpRequest) -> JsonResponse:
    """Readiness: DB, Redis, and the age of the last beat heartbeat and orchestrator cycle; 503 naming failures."""
    from django.conf import settings
    from django.core.cache import cache
    from django.utils import timezone

    from config.heartbeat import LAST_TICK_KEY

    checks = {"database": _timed(_database), "redis": _timed(_redis)}
    if not checks["redis"]["ok"]:
        # Both ages live in Redis: not checked (nor waited on) while it is down; "redis" names the cause.
        checks["beat"] = checks["orchestrator"] = {"ok": None, "error": "not checked: redis is down"}
    else:
        try:
            stored = cache.get_many([LAST_TICK_KEY, CYCLE_KEY])
        except Exception as exc:
            error = f"{exc.__class__.__name__}: {exc}"[:300]
            checks["beat"] = checks["orchestrator"] = {"ok": False, "error": error}
        else:
            now = timezone.now()
            checks["beat"] = _age(stored.get(LAST_TICK_KEY), settings.BEAT_MAX_AGE_SECONDS, now)
            checks["orchestrator"] = _age(stored.get(CYCLE_KEY), settings.CYCLE_MAX_AGE_SECONDS, now)
    failed = [name for name, check in checks.items() if check["ok"] is False]
    if failed:
        response = JsonResponse({"status": "error", "failed": failed, "checks": checks}, status=503)
    else:
        response = JsonResponse({"status": "ok", "checks": checks})
    response["Cache-Control"] = "no-store"
    return response
