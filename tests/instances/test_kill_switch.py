"""The kill switch's history and its reason: a resume clears the pause into SendingSwitch; a blank reason is
refused by the service, the API, the dashboard and the routing policy's admin action."""

from __future__ import annotations

import pytest
from django.urls import reverse

from common.exceptions import InvalidInput
from instances.models import RoutingPolicy, SendingSwitch
from instances.services import sending_pause, sending_resume

pytestmark = pytest.mark.django_db
POLICY = reverse("admin:instances_routingpolicy_changelist")


@pytest.fixture
def events(monkeypatch):
    """The events the kill switch emits (the business app hears pool.paused / pool.resumed)."""
    emitted: list[tuple[str, dict]] = []
    monkeypatch.setattr("instances.services.event_emit", lambda *, type, data: emitted.append((type, data)))
    return emitted


def test_a_resume_moves_the_pause_into_the_history_and_clears_the_policy(events):
    sending_pause(reason="incident 42", by="ana")
    policy = RoutingPolicy.load()
    assert (policy.is_paused, policy.paused_reason, policy.paused_by) == (True, "incident 42", "ana")
    switch = SendingSwitch.objects.get()
    assert switch.is_open and switch.paused_at == policy.paused_at

    sending_resume(by="bob")

    policy.refresh_from_db()
    assert (policy.is_paused, policy.paused_reason, policy.paused_by, policy.paused_at) == (False, "", "", None)
    switch.refresh_from_db()
    assert (switch.reason, switch.paused_by, switch.resumed_by) == ("incident 42", "ana", "bob")
    assert switch.resumed_at >= switch.paused_at
    assert events == [("pool.paused", {"reason": "incident 42", "by": "ana"}), ("pool.resumed", {"by": "bob"})]


def test_pausing_while_paused_and_resuming_while_running_change_nothing(events):
    sending_pause(reason="first", by="ana")
    sending_pause(reason="second", by="bob")
    assert RoutingPolicy.load().paused_by == "ana" and SendingSwitch.objects.count() == 1
    sending_resume(by="carl")
    sending_resume(by="dora")
    assert SendingSwitch.objects.get().resumed_by == "carl"
    assert [t for t, _data in events] == ["pool.paused", "pool.resumed"]


@pytest.mark.parametrize("reason", ["", "   ", "\n\t"])
def test_a_blank_reason_is_refused_by_the_service(reason):
    with pytest.raises(InvalidInput) as exc:
        sending_pause(reason=reason, by="ana")
    assert exc.value.extra["field"] == "reason"
    assert not RoutingPolicy.load().is_paused and not SendingSwitch.objects.exists()


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_blank_reason_is_a_422_naming_reason_in_the_api(api, reason):
    response = api.post("/api/v1/pool/pause", {"reason": reason})
    assert response.status_code == 422 and response.json()["field"] == "reason"
    assert not RoutingPolicy.load().is_paused


def test_the_api_resume_says_who_resumed_and_when(api):
    api.post("/api/v1/pool/pause", {"reason": "maintenance"})
    body = api.post("/api/v1/pool/resume", {}).json()
    switch = SendingSwitch.objects.get()
    assert body["paused"] is False and body["reason"] == "maintenance"
    assert body["by"] == switch.resumed_by and body["by"].startswith("api:") and body["at"] is not None


def test_the_admin_pause_action_asks_for_a_reason(admin_client):
    RoutingPolicy.load()
    selected = {"action": "pause_sending", "_selected_action": [1]}
    form = admin_client.post(POLICY, selected)
    assert form.status_code == 200 and 'name="reason"' in form.content.decode()
    assert not RoutingPolicy.load().is_paused
    blank = admin_client.post(POLICY, {**selected, "apply": "1", "reason": "   "})
    assert "Give a reason to pause sending." in blank.content.decode() and not RoutingPolicy.load().is_paused
    admin_client.post(POLICY, {**selected, "apply": "1", "reason": "carrier outage"}, follow=True)
    policy = RoutingPolicy.load()
    assert policy.is_paused and policy.paused_reason == "carrier outage" and policy.paused_by == "admin"
    admin_client.post(POLICY, {"action": "resume_sending", "_selected_action": [1]}, follow=True)
    assert not RoutingPolicy.load().is_paused
    assert SendingSwitch.objects.get().resumed_by == "admin"


def test_the_pause_fields_cannot_be_typed_in(admin_client):
    RoutingPolicy.load()
    url = reverse("admin:instances_routingpolicy_change", args=[1])
    admin_client.post(url, {"strategy": "round_robin", "binding_ttl_days": 30, "is_paused": "on",
                            "paused_reason": "typed", "paused_by": "me"})
    policy = RoutingPolicy.load()
    assert policy.strategy == "round_robin" and not policy.is_paused and policy.paused_reason == ""


def test_viewers_cannot_flip_the_switch(viewer_client):
    RoutingPolicy.load()
    viewer_client.post(POLICY, {"action": "pause_sending", "_selected_action": [1], "apply": "1", "reason": "x"})
    assert not RoutingPolicy.load().is_paused
