"""Admin login throttling: 5 failed logins for one username from one address lock that pair for 15 minutes.

The failures are counted in the cache (Redis), shared by every API replica. While a pair is locked even
the right password is refused, so guessing cannot continue; other users, and the same user from another
address, are not affected. If the cache is down the throttle fails open (logins work, a warning is
logged): an outage of Redis must not lock operators out of the admin during an incident.
"""

from __future__ import annotations

import hashlib
import logging

from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

logger = logging.getLogger(__name__)

MAX_FAILURES = 5
WINDOW_SECONDS = 15 * 60


def _key(username: str, request: HttpRequest | None) -> str:
    # REMOTE_ADDR, not X-Forwarded-For: a header the client writes would let it pick a fresh "address".
    address = request.META.get("REMOTE_ADDR", "") if request is not None else ""
    digest = hashlib.sha256(f"{username.strip().lower()}\0{address}".encode()).hexdigest()[:32]
    return f"security:admin-login-failures:{digest}"


def failures(username: str, request: HttpRequest | None) -> int:
    """Failed attempts in the current window; 0 when the cache cannot be read (fail open)."""
    try:
        return int(cache.get(_key(username, request)) or 0)
    except Exception:
        logger.warning("admin login throttle: cache unavailable, not enforcing")
        return 0


def record_failure(username: str, request: HttpRequest | None) -> None:
    key = _key(username, request)
    try:
        # The window starts at the first failure and is not extended by later ones.
        if not cache.add(key, 1, timeout=WINDOW_SECONDS):
            cache.incr(key)
    except ValueError:  # the key expired between add and incr: this failure opens a new window
        cache.add(key, 1, timeout=WINDOW_SECONDS)
    except Exception:
        logger.warning("admin login throttle: cache unavailable, failure not counted")


def reset(username: str, request: HttpRequest | None) -> None:
    try:
        cache.delete(_key(username, request))
    except Exception:
        logger.warning("admin login throttle: cache unavailable, counter not reset")


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form, refusing a (username, address) pair after MAX_FAILURES failures."""

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "throttled": _("Too many failed login attempts for this account from your address. "
                       "Try again in %(minutes)d minutes."),
    }

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        if failures(username, self.request) >= MAX_FAILURES:
            logger.warning("admin login refused (throttled) for %r from %s", username,
                           self.request.META.get("REMOTE_ADDR") if self.request else "?")
            raise ValidationError(self.error_messages["throttled"], code="throttled",
                                  params={"minutes": WINDOW_SECONDS // 60})
        try:
            cleaned = super().clean()
        except ValidationError:
            record_failure(username, self.request)
            raise
        reset(username, self.request)
        return cleaned
