"""Reads for the outbox: endpoints for the API, an endpoint's recent attempts."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils.translation import gettext as _

from common.exceptions import NotFound
from outbox.models import DeliveryAttempt, Endpoint

RECENT_ATTEMPTS = 20


def endpoint_list() -> QuerySet[Endpoint]:
    return Endpoint.objects.order_by("pk")


def endpoint_get(*, endpoint_id: int) -> Endpoint:
    endpoint = Endpoint.objects.filter(pk=endpoint_id).first()
    if endpoint is None:
        raise NotFound(_("Endpoint %(id)s does not exist.") % {"id": endpoint_id})
    return endpoint


def endpoint_recent_attempts(*, endpoint: Endpoint | int, limit: int = RECENT_ATTEMPTS) -> list[DeliveryAttempt]:
    """The endpoint's latest attempts, newest first, with their event (one query)."""
    pk = endpoint if isinstance(endpoint, int) else endpoint.pk
    return list(DeliveryAttempt.objects.filter(endpoint_id=pk).select_related("delivery__event")
                .order_by("-attempted_at", "-pk")[:limit])
