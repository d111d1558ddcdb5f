"""`X-API-Key` authentication for the NinjaAPI and the plain health views that need a key."""

from __future__ import annotations

from datetime import timedelta

from django.http import HttpRequest
from django.utils import timezone
from ninja.security import APIKeyHeader

from chipfarm.models import ApiKey


def api_key_for(raw_key: str | None) -> ApiKey | None:
    if not raw_key:
        return None
    key = ApiKey.objects.matching(raw_key).first()
    if key is None:
        return None
    now = timezone.now()
    # Record use at most once a minute: one write per request would serialise every call on one row.
    if key.last_used_at is None or now - key.last_used_at > timedelta(minutes=1):
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key


class ApiKeyAuth(APIKeyHeader):
    param_name = "X-API-Key"

    def authenticate(self, request: HttpRequest, key: str | None) -> ApiKey | None:
        return api_key_for(key)
