"""The activator's health, for GET /health/chip-activator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils.translation import gettext as _

from activation.client import ActivatorClient, ActivatorError


@dataclass(frozen=True)
class ActivatorHealth:
    is_up: bool
    body: dict[str, Any]
    message: str = ""


HEALTH_TIMEOUT_SECONDS = 5.0
UP_STATUSES = frozenset({"healthy", "degraded"})  # degraded still activates, slowly


def activator_health() -> ActivatorHealth:
    """The activator's own `/health` body plus its queue size; down when unreachable or unhealthy."""
    timeout = min(HEALTH_TIMEOUT_SECONDS, float(settings.HTTP_TIMEOUT_SECONDS))
    try:
        with ActivatorClient(timeout=timeout) as activator:
            health = activator.health()
            queue = activator.queue()
    except ActivatorError as exc:
        return ActivatorHealth(False, {}, _("The chip activator is unavailable (%(kind)s): %(message)s")
                               % {"kind": exc.kind, "message": exc.message})
    body = {**health, "queue_size": queue.get("size")}
    status = str(health.get("status") or "unknown")
    if status not in UP_STATUSES:
        return ActivatorHealth(False, body, _("The chip activator reports itself %(status)s.") % {"status": status})
    return ActivatorHealth(True, body)
