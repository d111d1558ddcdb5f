"""The gateways' webhooks pass by the middleware that serves people (config.middleware.PassesGatewayWebhooks);
every other page keeps it, and the webhooks keep host validation, the security headers and the request id."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import translation

from config.middleware import gateway_webhook_paths

pytestmark = pytest.mark.django_db

BROWSER_HEADERS = ("Content-Language", "Set-Cookie")


def _browser_client() -> Client:
    """A client that looks like a person's browser: a session cookie, a CSRF cookie, English preferred."""
    client = Client(headers={"Accept-Language": "en"})
    client.cookies["sessionid"] = "not-a-real-session"
    client.cookies["csrftoken"] = "x" * 32
    return client


@pytest.mark.parametrize("path", sorted(gateway_webhook_paths()))
def test_a_gateway_webhook_gets_no_browser_headers_cookies_or_language(path, settings):
    settings.LANGUAGE_CODE = "pt-br"  # the site's language; the client asks for English
    translation.activate("en")  # what the thread's previous request chose must not leak into the answer either
    try:
        response = _browser_client().post(path, data=b"[]", content_type="application/json",
                                          headers={"X-Webhook-Secret": settings.EVOLUTION_WEBHOOK_SECRET})
    finally:
        translation.deactivate()
    assert response.status_code in (401, 422), response.content
    for header in BROWSER_HEADERS:
        assert header not in response.headers, header
    assert "Cookie" not in response.headers.get("Vary", "")
    assert "Accept-Language" not in response.headers.get("Vary", "")
    assert not response.cookies
    assert response.headers["X-Request-ID"]
    assert response.headers["X-Frame-Options"] == "DENY"  # check --deploy wants Django's own, for every response
    assert response.headers["X-Content-Type-Options"] == "nosniff"  # SecurityMiddleware still runs
    if path == "/webhooks/evolution":
        assert response.json()["message"] == "O corpo deve ser um objeto JSON."  # LANGUAGE_CODE, not the header's


def test_every_other_page_keeps_the_browser_middleware():
    response = _browser_client().get("/admin/login/")
    assert response.status_code == 200
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Content-Language"] == "en"
    assert "csrftoken" in response.cookies
    # A path that only starts like a webhook is a page like any other.
    near = _browser_client().post("/webhooks/slack/commands", data={})
    assert near.headers.get("Content-Language") == "en"


@pytest.mark.parametrize("path", sorted(gateway_webhook_paths()))
def test_a_gateway_webhook_still_checks_the_host(path, settings):
    response = Client().post(path, data=b"{}", content_type="application/json", HTTP_HOST="attacker.example",
                             headers={"X-Webhook-Secret": settings.EVOLUTION_WEBHOOK_SECRET})
    assert response.status_code == 400
