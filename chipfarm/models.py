"""The pool: API keys for other systems (the pool configuration and operations come with [3/6])."""

from __future__ import annotations

import hashlib
import secrets

from django.db import models
from django.utils.translation import gettext_lazy as _


def _digest(raw_key: str) -> str:
    # The keys are 256-bit random tokens: a plain SHA-256 is enough (no dictionary to attack) and lets
    # the lookup be one indexed equality instead of a slow hash per stored key.
    return hashlib.sha256(raw_key.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def matching(self, raw_key: str) -> ApiKeyQuerySet:
        return self.filter(key_hash=_digest(raw_key), is_active=True)


class ApiKey(models.Model):
    """A key another system sends in `X-API-Key`. Only its hash is stored; the key is shown once."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    prefix = models.CharField(_("prefix"), max_length=12, help_text=_("First characters, to recognise a key."))
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    is_active = models.BooleanField(_("active"), default=True)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, *, name: str) -> tuple[ApiKey, str]:
        """Create a key; returns the row and the raw key, which is never stored."""
        raw = f"cf_{secrets.token_urlsafe(32)}"
        key = cls.objects.create(name=name, prefix=raw[:10], key_hash=_digest(raw))
        return key, raw
