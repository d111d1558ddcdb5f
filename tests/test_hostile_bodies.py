"""Hostile bodies on both webhooks and on every API operation that takes one: a 4xx `{code, message}`, no row."""

from __future__ import annotations

import re

import pytest
from django.apps import apps

from activation.signing import signed_headers

pytestmark = pytest.mark.django_db

HOSTILE = {
    "not_utf8": b'{"contact": "\xff\xfe", "event": "x", "instance": "y"}',
    "raw_nul": b'{"contact": "a\x00b", "event": "x\x00", "instance": "y"}',
    "deep_nesting": b"[" * 100_000 + b"]" * 100_000,
    "deep_object": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "oversized": b'{"contact": "' + b"1" * 3_000_000 + b'"}',
    "not_json": b"{'contact': 1",
}
PROJECT_APPS = ("chips", "instances", "activation", "warmer", "chipfarm", "outbox")


def rows() -> dict[str, int]:
    return {m._meta.label: m.objects.count() for m in apps.get_models()
            if m._meta.app_label in PROJECT_APPS and not m._meta.proxy}


def assert_refused(response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:200])
    body = response.json()
    assert isinstance(body.get("code"), str) and isinstance(body.get("message"), str)


@pytest.mark.parametrize("kind", HOSTILE)
def test_the_evolution_webhook_refuses_hostile_bodies(client, settings, kind):
    before = rows()
    response = client.post("/webhooks/evolution", data=HOSTILE[kind], content_type="application/json",
                           headers={"X-Webhook-Secret": settings.EVOLUTION_WEBHOOK_SECRET})
    assert_refused(response)
    assert rows() == before


@pytest.mark.parametrize("kind", HOSTILE)
def test_the_salvy_webhook_refuses_hostile_bodies_even_when_signed(client, settings, kind):
    before = rows()
    try:
        headers = signed_headers(settings.SALVY_WEBHOOK_SECRET, f"msg_{kind}", HOSTILE[kind])
    except UnicodeDecodeError:  # Standard Webhooks signs text: a non-UTF-8 body cannot even be signed
        headers = {"svix-id": "msg_x", "svix-timestamp": "1", "svix-signature": "v1,AAAA"}
    response = client.post("/webhooks/salvy", data=HOSTILE[kind], content_type="application/json",
                           headers=headers)
    assert_refused(response)
    assert rows() == before


def _operations_with_a_body() -> list[tuple[str, str]]:
    from config.api import api

    schema = api.get_openapi_schema()
    ops = []
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            if "requestBody" in op:
                ops.append((method.upper(), re.sub(r"\{[^}]+\}", "1", path)))
    return sorted(ops)


OPERATIONS = _operations_with_a_body()


def test_the_api_has_operations_with_bodies():
    assert ("POST", "/api/v1/route") in OPERATIONS and ("POST", "/api/v1/messages") in OPERATIONS


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_every_api_operation_refuses_hostile_bodies(client, api_key, method, path, kind):
    before = rows()
    response = client.generic(method, path, data=HOSTILE[kind], content_type="application/json",
                              headers={"X-API-Key": api_key})
    assert_refused(response)
    assert rows() == before
