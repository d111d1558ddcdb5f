"""What a locked-out login sees: django-axes counts the failures (config/settings/base.py, AXES_*), this page answers.

axes locks a (username, address) pair after AXES_FAILURE_LIMIT failures within AXES_COOLOFF_TIME; while it is
locked even the right password is refused. Its own answer is a plain-text body; operators get the admin's login
page look instead, in their language, with how long to wait and a way back to the login form.
"""

from __future__ import annotations

from axes.helpers import get_cool_off
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext as _

LOCKOUT_STATUS = 429  # Too Many Requests


def lockout_minutes(request: HttpRequest | None = None) -> int:
    """The cool-off in whole minutes (at least 1), as AXES_COOLOFF_TIME says."""
    cool_off = get_cool_off(request)
    return max(1, int(cool_off.total_seconds() // 60)) if cool_off else 0


def lockout_response(request: HttpRequest, original_response: HttpResponse | None = None,
                     credentials: dict | None = None) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the lockout page (admin-styled, status 429) for a refused login."""
    message = _("Too many failed login attempts for this account from your address. "
                "Try again in %(minutes)d minutes.") % {"minutes": lockout_minutes(request)}
    context = {
        **admin.site.each_context(request),
        "title": _("Log in"),
        "message": message,
        "login_url": reverse("admin:login"),
    }
    response = TemplateResponse(request, "admin/lockout.html", context, status=LOCKOUT_STATUS)
    return response.render()
