"""/api/v1/chips and /health over HTTP, with the JSON error contract."""

from __future__ import annotations

import pytest
from django.utils import timezone

from chips.models import Chip
from tests.factories import chip_in_state

pytestmark = pytest.mark.django_db
S = Chip.Status


def test_health_needs_no_key_and_touches_the_database(client, django_assert_num_queries):
    with django_assert_num_queries(1):
        response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "cf_wrong"}, {"X-API-Key": ""}])
def test_no_key_or_a_wrong_key_is_401(client, headers):
    chip = chip_in_state(status=S.WARMING)
    for method, path in [("get", "/api/v1/chips"), ("get", f"/api/v1/chips/{chip.pk}"),
                         ("post", f"/api/v1/chips/{chip.pk}/transitions")]:
        response = getattr(client, method)(path, headers=headers, content_type="application/json",
                                           **({"data": {"transition": "retire"}} if method == "post" else {}))
        assert response.status_code == 401, path
        assert response.json()["code"] == "unauthorized"
    chip.refresh_from_db()
    assert chip.status == S.WARMING


def test_a_revoked_key_is_refused(client, api_key):
    from chipfarm.models import ApiKey

    ApiKey.objects.update(is_active=False)
    assert client.get("/api/v1/chips", headers={"X-API-Key": api_key}).status_code == 401


def test_list_filters_by_status_and_paginates(api):
    for _ in range(3):
        chip_in_state(status=S.WARMING)
    chip_in_state(status=S.PENDING)

    page = api.get("/api/v1/chips?status=warming&limit=2&offset=0").json()
    assert page["count"] == 3
    assert len(page["items"]) == 2
    assert {c["status"] for c in page["items"]} == {"warming"}
    rest = api.get("/api/v1/chips?status=warming&limit=2&offset=2").json()
    assert len(rest["items"]) == 1
    assert api.get("/api/v1/chips").json()["count"] == 4


def test_list_rejects_an_unknown_status_naming_the_field(api):
    response = api.get("/api/v1/chips?status=sleeping")
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_input" and body["field"] == "status"


def test_detail_has_history_newest_first_and_allowed_transitions(api):
    chip = chip_in_state(status=S.WARMING)
    body = api.get(f"/api/v1/chips/{chip.pk}").json()
    assert body["status"] == "warming"
    assert [h["transition"] for h in body["history"]] == ["activation_succeeded", "start_activation",
                                                          "provisioned"]
    assert "retire" in body["allowed_transitions"] and "ban" in body["allowed_transitions"]
    assert "promote_to_ready" not in body["allowed_transitions"]  # guard does not hold


def test_unknown_chip_is_404(api):
    for response in (api.get("/api/v1/chips/987654"),
                     api.post("/api/v1/chips/987654/transitions", {"transition": "retire"})):
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


def test_transition_succeeds_with_the_new_state(api):
    chip = chip_in_state(status=S.ACTIVE)
    response = api.post(f"/api/v1/chips/{chip.pk}/transitions", {"transition": "cool_down", "reason": "hot"})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "cooling"
    assert body["history"][0]["transition"] == "cool_down"
    assert body["history"][0]["reason"] == "hot"
    assert body["history"][0]["actor_kind"] == "api"


def test_forbidden_transition_is_409_and_changes_nothing(api):
    chip = chip_in_state(status=S.WARMING)
    history = chip.transitions.count()
    response = api.post(f"/api/v1/chips/{chip.pk}/transitions", {"transition": "promote_to_active"})
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "transition_not_allowed"
    assert body["state"] == "warming"
    assert "retire" in body["allowed"] and "promote_to_active" not in body["allowed"]
    assert "The chip is Warming" in body["message"] and "“Promote to active” is not possible" in body["message"]
    chip.refresh_from_db()
    assert chip.status == S.WARMING
    assert chip.transitions.count() == history


def test_system_transitions_are_not_for_the_api(api):
    chip = chip_in_state(status=S.PENDING)
    response = api.post(f"/api/v1/chips/{chip.pk}/transitions", {"transition": "start_activation"})
    assert response.status_code == 409
    assert Chip.objects.get(pk=chip.pk).status == S.PENDING


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("not json", None),
        ({}, "transition"),
        ({"transition": ""}, "transition"),
        ({"transition": "fly"}, "transition"),
        ({"transition": "retire", "reason": "x" * 501}, "reason"),
        ({"transition": 12}, "transition"),
    ],
)
def test_malformed_body_is_422_and_changes_nothing(api, client, api_key, body, field):
    chip = chip_in_state(status=S.WARMING)
    if isinstance(body, str):
        response = client.post(f"/api/v1/chips/{chip.pk}/transitions", data=body,
                               content_type="application/json", headers={"X-API-Key": api_key})
    else:
        response = api.post(f"/api/v1/chips/{chip.pk}/transitions", body)
    assert response.status_code == 422, response.content
    data = response.json()
    assert data["code"] == "invalid_input" and data["message"]
    if field:
        assert data["field"] == field
    chip.refresh_from_db()
    assert chip.status == S.WARMING


def test_api_docs_are_served(client):
    assert client.get("/api/docs").status_code == 200
    schema = client.get("/api/openapi.json").json()
    assert "/api/v1/chips/{chip_id}/transitions" in schema["paths"]


def test_promoting_a_disconnected_ready_chip_is_409_and_changes_nothing(api):
    chip = chip_in_state(status=S.READY, trust=95, is_connected=False, connection_changed_at=timezone.now())
    history = chip.transitions.count()
    response = api.post(f"/api/v1/chips/{chip.pk}/transitions", {"transition": "promote_to_active"})
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "transition_not_allowed" and body["state"] == "ready"
    assert "promote_to_active" not in body["allowed"]
    chip.refresh_from_db()
    assert chip.status == S.READY and chip.active_at is None
    assert chip.transitions.count() == history
