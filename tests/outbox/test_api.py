"""/api/v1/endpoints: CRUD, the secret shown once, the test ping, and every error as JSON {code, message} 4xx."""

from __future__ import annotations

import pytest

from outbox import delivery
from outbox.models import Delivery, Endpoint, Event

pytestmark = pytest.mark.django_db
URL = "/api/v1/endpoints"


def _create(api_client, consumer, **body):
    response = api_client.post(URL, {"url": consumer.url, **body})
    assert response.status_code == 201, response.content
    return response.json()


def test_create_shows_the_secret_once_then_list_and_detail_never_do(api_client, consumer):
    created = _create(api_client, consumer, event_types=["message.received", "message.status"],
                      description="CRM")
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 30
    assert created["secret"] == Endpoint.objects.get(pk=created["id"]).secret
    assert created["event_types"] == ["message.received", "message.status"] and created["is_enabled"]

    listed = api_client.get(URL).json()
    assert [e["id"] for e in listed] == [created["id"]]
    detail = api_client.get(f"{URL}/{created['id']}").json()
    assert detail["url"] == consumer.url and detail["recent_attempts"] == []
    for body in (listed[0], detail):
        assert "secret" not in body
        assert created["secret"] not in str(body)


def test_star_and_empty_mean_every_event(api_client, consumer):
    assert _create(api_client, consumer, event_types=["*", "ping"])["event_types"] == ["*"]
    assert _create(api_client, consumer)["event_types"] == []


def test_patch_changes_only_what_is_given_and_can_disable_and_enable(api_client, consumer):
    created = _create(api_client, consumer, description="before")
    response = api_client.patch(f"{URL}/{created['id']}", {"event_types": ["pool.paused"]})
    assert response.status_code == 200
    assert response.json()["event_types"] == ["pool.paused"] and response.json()["description"] == "before"

    disabled = api_client.patch(f"{URL}/{created['id']}", {"is_enabled": False}).json()
    assert not disabled["is_enabled"] and disabled["disabled_reason"].startswith("Disabled by API key test-")
    enabled = api_client.patch(f"{URL}/{created['id']}", {"is_enabled": True}).json()
    assert enabled["is_enabled"] and enabled["disabled_reason"] == "" and enabled["disabled_at"] is None


def test_delete(api_client, consumer):
    created = _create(api_client, consumer)
    assert api_client.delete(f"{URL}/{created['id']}").status_code == 204
    assert not Endpoint.objects.exists()
    response = api_client.delete(f"{URL}/{created['id']}")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_ping_goes_to_that_endpoint_only_and_shows_in_its_attempts(api_client, consumer):
    created = _create(api_client, consumer, event_types=["message.received"])
    other = _create(api_client, consumer)
    response = api_client.post(f"{URL}/{created['id']}/test")
    assert response.status_code == 202
    body = response.json()
    assert body["event_id"].startswith("evt_") and body["status"] == "pending"
    assert list(Delivery.objects.values_list("endpoint_id", flat=True)) == [created["id"]]
    assert other["id"] not in Delivery.objects.values_list("endpoint_id", flat=True)

    delivery.deliveries_sweep()
    [received] = consumer.received
    assert received.webhook_id == body["event_id"] and received.json()["type"] == "ping"
    attempts = api_client.get(f"{URL}/{created['id']}").json()["recent_attempts"]
    assert [(a["event_id"], a["event_type"], a["status_code"], a["is_success"]) for a in attempts] == [
        (body["event_id"], "ping", 204, True)]


def test_ping_to_a_disabled_endpoint_is_a_409(api_client, consumer):
    created = _create(api_client, consumer, is_enabled=False)
    response = api_client.post(f"{URL}/{created['id']}/test")
    assert response.status_code == 409
    assert response.json()["code"] == "endpoint_disabled"
    assert not Event.objects.exists()


@pytest.mark.parametrize("url", ["http://10.0.0.5/x", "http://169.254.169.254/", "http://127.0.0.1:8000/hooks",
                                 "http://[::1]/"])
def test_private_targets_are_refused_when_not_allowed(api_client, settings, url):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    response = api_client.post(URL, {"url": url})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_input" and body["field"] == "url" and "private" in body["message"]
    assert not Endpoint.objects.exists()


def test_patching_to_a_private_target_is_refused(api_client, consumer, settings):
    created = _create(api_client, consumer)
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    response = api_client.patch(f"{URL}/{created['id']}", {"url": "http://169.254.169.254/latest"})
    assert response.status_code == 422 and response.json()["field"] == "url"
    assert Endpoint.objects.get(pk=created["id"]).url == consumer.url


@pytest.mark.parametrize(("body", "field"), [
    ({"url": "ftp://example.com/x"}, "url"),
    ({"url": "not a url"}, "url"),
    ({"url": ""}, "url"),
    ({}, "url"),
    ({"url": "http://127.0.0.1/\u0000"}, "url"),
    ({"url": "http://127.0.0.1/", "event_types": ["message.exploded"]}, "event_types"),
    ({"url": "http://127.0.0.1/", "event_types": "ping"}, "event_types"),
    ({"url": "http://127.0.0.1/", "event_types": [""]}, "event_types.0"),
    ({"url": "http://127.0.0.1/", "description": "x" * 501}, "description"),
    ({"url": "http://127.0.0.1/", "is_enabled": "maybe"}, "is_enabled"),
])
def test_bad_input_is_a_422_naming_the_field(api_client, body, field):
    response = api_client.post(URL, body)
    assert response.status_code == 422, response.content
    assert response.json()["code"] == "invalid_input" and response.json()["field"] == field
    assert response.json()["message"]


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("get", f"{URL}/999999", 404, "not_found"),
    ("get", f"{URL}/abc", 422, "invalid_input"),
    ("get", f"{URL}/{2**70}", 404, "not_found"),
    ("patch", f"{URL}/999999", 404, "not_found"),
    ("delete", f"{URL}/-1", 404, "not_found"),
    ("post", f"{URL}/999999/test", 404, "not_found"),
])
def test_every_error_is_json_code_and_message(api_client, method, path, status, code):
    response = getattr(api_client, method)(path, **({"data": {}} if method == "patch" else {}))
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["code"] == code and response.json()["message"]


@pytest.mark.parametrize("raw", [b"{", b"[]", b'"x"', b"\xff\xfe", b'{"url": 5}'])
def test_malformed_bodies_are_4xx_json(api_client, raw):
    response = api_client.post(URL, raw)
    assert 400 <= response.status_code < 500
    assert set(response.json()) >= {"code", "message"}


def test_the_api_key_is_required(client):
    for method, path in [("get", URL), ("post", URL), ("get", f"{URL}/1"), ("delete", f"{URL}/1"),
                         ("post", f"{URL}/1/test")]:
        response = getattr(client, method)(path)
        assert response.status_code == 401, (method, path)
        assert response.json()["code"] == "unauthorized"


def test_the_operations_are_in_the_openapi_document(client):
    paths = client.get("/api/openapi.json").json()["paths"]
    assert set(paths[URL]) == {"get", "post"}
    assert set(paths[URL + "/{endpoint_id}"]) == {"get", "patch", "delete"}
    assert set(paths[URL + "/{endpoint_id}/test"]) == {"post"}
    # W2 4/7's other operations: asking about messages and contacts, the suppression list.
    assert set(paths["/api/v1/messages"]) == {"get", "post"}
    assert set(paths["/api/v1/messages/{message_id}"]) == {"get"}
    assert set(paths["/api/v1/contacts/{contact}"]) == {"get"}
    assert set(paths["/api/v1/suppressions"]) == {"post"}
    assert set(paths["/api/v1/suppressions/{contact}"]) == {"delete"}
    responses = {(path, method): set(op["responses"]) for path, ops in paths.items() for method, op in ops.items()}
    assert {"200", "404"} <= responses["/api/v1/messages", "get"]
    assert {"200", "404"} <= responses["/api/v1/messages/{message_id}", "get"]
    assert "200" in responses["/api/v1/contacts/{contact}", "get"]
    assert {"200", "201"} <= responses["/api/v1/suppressions", "post"]
    assert {"204", "404"} <= responses["/api/v1/suppressions/{contact}", "delete"]
    idempotency_key = paths["/api/v1/messages"]["get"]["parameters"]
    assert [(p["name"], p["in"], p["required"]) for p in idempotency_key] == [("idempotency_key", "query", True)]
