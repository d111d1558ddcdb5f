"""POST /webhooks/slack/commands: Slack's signature first, then pausar / retomar / status as the linked operator."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from chipfarm.models import SlackIdentity
from chipfarm.slack_commands import slack_signature
from chips.models import Chip
from instances.models import RoutingPolicy, SendingSwitch
from instances.services import sending_pause
from tests.factories import chip_in_state

pytestmark = pytest.mark.django_db
URL = "/webhooks/slack/commands"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
S = Chip.Status


@pytest.fixture(autouse=True)
def signing_secret(settings):
    settings.SLACK_SIGNING_SECRET = SECRET


def _operator(django_user_model, username: str, slack_user_id: str, *, group: str = "Operators",
              is_active: bool = True) -> SlackIdentity:
    user = django_user_model.objects.create_user(username, password="pw", is_staff=True, is_active=is_active)
    user.groups.add(Group.objects.get(name=group))
    return SlackIdentity.objects.create(user=user, slack_user_id=slack_user_id)


@pytest.fixture
def alice(django_user_model) -> SlackIdentity:
    return _operator(django_user_model, "alice", "U0ALICE01")


def form(text: str, *, user_id: str = "U0ALICE01", **extra: str) -> bytes:
    fields = {"token": "legacy-unused", "team_id": "T0CHIPFARM", "team_domain": "chipfarm", "channel_id": "C0OPS",
              "channel_name": "julia-gestao", "user_id": user_id, "user_name": "alice.slack",
              "command": "/chipfarm", "text": text, "api_app_id": "A0APP",
              "response_url": "https://hooks.slack.com/commands/T0CHIPFARM/1/x", "trigger_id": "1.2.3", **extra}
    return urlencode(fields).encode()


def post(client: Client, body: bytes, *, secret: str = SECRET, timestamp: int | None = None,
         headers: dict[str, str] | None = None, **kw):
    ts = str(int(time.time()) if timestamp is None else timestamp)
    sent = headers if headers is not None else {
        "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": slack_signature(secret=secret, timestamp=ts, body=body)}
    return client.post(URL, data=body, content_type="application/x-www-form-urlencoded", headers=sent, **kw)


def policy() -> RoutingPolicy:
    return RoutingPolicy.objects.filter(pk=1).first() or RoutingPolicy()


# --- the signature ----------------------------------------------------------------------------------------------

def test_the_signature_is_slacks_documented_example():
    # https://api.slack.com/authentication/verifying-requests-from-slack
    body = (b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
            b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
            b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
            b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
    assert slack_signature(secret=SECRET, timestamp="1531420618", body=body) == (
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503")


@pytest.mark.parametrize("forgery", ["wrong_secret", "stale", "future", "tampered", "no_headers", "no_signature",
                                     "v1_scheme", "non_ascii", "huge_timestamp", "float_timestamp"])
def test_a_bad_or_stale_signature_is_401_before_any_query_and_nothing_changes(
        client, alice, django_assert_num_queries, forgery):
    body = form("pausar incidente 42")
    now = int(time.time())
    good = slack_signature(secret=SECRET, timestamp=str(now), body=body)
    kwargs = {
        "wrong_secret": {"secret": "not-our-secret"},
        "stale": {"timestamp": now - 360},  # a minute past the window: a slow machine cannot bring it back in
        "future": {"timestamp": now + 360},
        "tampered": {"headers": {"X-Slack-Request-Timestamp": str(now),
                                 "X-Slack-Signature": slack_signature(secret=SECRET, timestamp=str(now),
                                                                      body=form("status"))}},
        "no_headers": {"headers": {}},
        "no_signature": {"headers": {"X-Slack-Request-Timestamp": str(now)}},
        "v1_scheme": {"headers": {"X-Slack-Request-Timestamp": str(now), "X-Slack-Signature": "v1" + good[2:]}},
        "non_ascii": {"headers": {"X-Slack-Request-Timestamp": str(now), "X-Slack-Signature": "v0=çã"}},
        "huge_timestamp": {"headers": {"X-Slack-Request-Timestamp": "9" * 5000, "X-Slack-Signature": good}},
        "float_timestamp": {"headers": {"X-Slack-Request-Timestamp": f"{now}.5", "X-Slack-Signature": good}},
    }[forgery]

    with django_assert_num_queries(0):
        response = post(client, body, **kwargs)

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_signature" and response.json()["message"]
    assert not RoutingPolicy.objects.exists()


def test_a_signature_just_inside_the_five_minute_window_is_accepted(client, alice):
    response = post(client, form("status"), timestamp=int(time.time()) - 290)
    assert response.status_code == 200


def test_without_a_signing_secret_the_endpoint_is_off(client, alice, settings):
    settings.SLACK_SIGNING_SECRET = ""
    response = post(client, form("pausar incidente 42"), secret="")
    assert response.status_code == 503 and response.json()["code"] == "slack_not_configured"
    assert not policy().is_paused


def test_only_post_is_allowed(client):
    assert client.get(URL).status_code == 405


# --- pausar -----------------------------------------------------------------------------------------------------

def test_pausar_pauses_sending_with_the_reason_and_the_operator_as_actor(client, alice, api):
    response = post(client, form("pausar incidente 42"))

    assert response.status_code == 200
    body = response.json()
    assert body["response_type"] == "in_channel"
    assert "PAUSADO" in body["text"] and "incidente 42" in body["text"] and "slack:alice" in body["text"]
    current = policy()
    assert (current.is_paused, current.paused_reason, current.paused_by) == (True, "incidente 42", "slack:alice")
    assert current.paused_at is not None
    routed = api.post("/api/v1/route", {"contact": "11988887777"})
    assert routed.status_code == 503 and routed.json()["code"] == "paused"


@pytest.mark.parametrize(("text", "reason"), [
    ("pausar motivo: emergência", "emergência"),
    ("pausar julia motivo: emergencia", "emergencia"),  # the runbook's own words
    ("PAUSAR   Motivo:   bans subindo  ", "bans subindo"),
    ("pause reason: bad campaign", "bad campaign"),
])
def test_pausar_takes_the_reason_after_motivo(client, alice, text, reason):
    assert post(client, form(text)).status_code == 200
    assert (policy().is_paused, policy().paused_reason) == (True, reason)


@pytest.mark.parametrize("text", ["pausar", "pausar   ", "pausar motivo:", "pausar julia motivo:  "])
def test_a_blank_reason_is_refused_and_nothing_changes(client, alice, text):
    body = post(client, form(text)).json()
    assert body["response_type"] == "ephemeral"
    assert "Informe um motivo" in body["text"] and "/chipfarm pausar motivo: emergência" in body["text"]
    assert not policy().is_paused and not RoutingPolicy.objects.exists()


# --- retomar ----------------------------------------------------------------------------------------------------

def test_retomar_resumes_sending_as_the_operator(client, alice):
    sending_pause(reason="incidente 42", by="bob")

    body = post(client, form("retomar")).json()

    assert body["response_type"] == "in_channel"
    assert "retomado" in body["text"] and "slack:alice" in body["text"] and "incidente 42" in body["text"]
    current = policy()
    assert (current.is_paused, current.paused_reason, current.paused_by) == (False, "", "")
    switch = SendingSwitch.objects.get()
    assert (switch.paused_by, switch.reason, switch.resumed_by) == ("bob", "incidente 42", "slack:alice")


def test_retomar_when_nothing_is_paused_changes_nothing(client, alice):
    body = post(client, form("retomar julia")).json()
    assert body["response_type"] == "ephemeral" and "não estava pausado" in body["text"]
    assert not RoutingPolicy.objects.exists()


# --- status -----------------------------------------------------------------------------------------------------

def test_status_answers_the_pool_counts_health_and_that_sending_is_enabled(client, alice):
    for status in (S.ACTIVE, S.ACTIVE, S.READY, S.WARMING, S.BANNED):
        chip_in_state(status=status)

    body = post(client, form("status")).json()

    text = body["text"]
    assert body["response_type"] == "ephemeral"
    assert text.startswith("*Pool: crítico*\n• ativos 2 < mínimo em produção 5\n")  # the default minimum is 5
    assert "Ativos 2 (meta 5–20) · prontos 1 (mínimo 2) · em aquecimento 1 (reserva 4, 0 a caminho)" in text
    assert "Em resfriamento: 0 · Degradado: 0 · " in text and "Banido: 1" in text
    assert "Envio habilitado." in text
    assert not RoutingPolicy.objects.exists()  # a read writes nothing


def test_status_says_who_paused_and_why(client, alice):
    sending_pause(reason="incidente 42", by="slack:alice")
    text = post(client, form("status")).json()["text"]
    assert "Envio PAUSADO desde" in text and "slack:alice" in text and "incidente 42" in text


def test_answers_are_portuguese_whatever_the_request_language(client, alice):
    text = post(client, form("status"), headers=None, HTTP_ACCEPT_LANGUAGE="en").json()["text"]
    assert "Envio habilitado." in text and "Sending is enabled" not in text


@pytest.mark.parametrize("text", ["", "ajuda", "help", "apagar tudo"])
def test_anything_else_gets_the_help(client, alice, text):
    body = post(client, form(text)).json()
    assert body["response_type"] == "ephemeral"
    assert "/chipfarm pausar" in body["text"] and "/chipfarm retomar" in body["text"]
    assert "/chipfarm status" in body["text"]
    assert not RoutingPolicy.objects.exists()


# --- who may act ------------------------------------------------------------------------------------------------

@pytest.fixture
def not_operators(django_user_model):
    _operator(django_user_model, "vera", "U0VIEWER1", group="Viewers")
    _operator(django_user_model, "olga", "U0FORMER1", is_active=False)


@pytest.mark.parametrize("user_id", ["U0NOBODY1", "U0VIEWER1", "U0FORMER1", ""])
@pytest.mark.parametrize("text", ["pausar incidente 42", "retomar", "status"])
def test_users_not_linked_to_an_active_operator_are_refused_and_nothing_changes(
        client, alice, not_operators, user_id, text):
    if text == "retomar":
        sending_pause(reason="incidente 42", by="bob")
    before = policy()

    body = post(client, form(text, user_id=user_id)).json()

    assert body["response_type"] == "ephemeral"
    assert "não pode usar os comandos do chipfarm" in body["text"]
    assert "Pool" not in body["text"]
    after = policy()
    assert (after.is_paused, after.paused_reason, after.paused_by, after.paused_at) == (
        before.is_paused, before.paused_reason, before.paused_by, before.paused_at)


def test_an_operator_removed_from_the_group_is_refused_at_once(client, alice):
    alice.user.groups.clear()
    assert "não pode usar" in post(client, form("pausar incidente 42")).json()["text"]
    assert not policy().is_paused


# --- the identities in the admin --------------------------------------------------------------------------------

CHANGELIST = reverse("admin:chipfarm_slackidentity_changelist")


def test_the_admin_lists_identities_and_whether_they_may_act(admin_client, alice, not_operators,
                                                             django_user_model, django_assert_max_num_queries):
    for n in range(10):
        _operator(django_user_model, f"op{n}", f"U0OP{n:05d}")
    with django_assert_max_num_queries(10):
        page = admin_client.get(CHANGELIST).content.decode()
    assert "U0ALICE01" in page and "U0VIEWER1" in page
    may_act = dict(SlackIdentity.objects.with_may_act().values_list("slack_user_id", "may_act"))
    assert may_act["U0ALICE01"] and not may_act["U0VIEWER1"] and not may_act["U0FORMER1"]


def test_a_slack_id_that_is_not_a_member_id_is_refused_by_the_admin(admin_client, django_user_model):
    user = django_user_model.objects.create_user("carla", password="pw")
    response = admin_client.post(reverse("admin:chipfarm_slackidentity_add"),
                                 {"user": user.pk, "slack_user_id": "@carla"})
    assert response.status_code == 200 and "A Slack member id looks like U012AB3CD." in response.content.decode()
    assert not SlackIdentity.objects.exists()
    response = admin_client.post(reverse("admin:chipfarm_slackidentity_add"),
                                 {"user": user.pk, "slack_user_id": "U012AB3CD"})
    assert response.status_code == 302 and SlackIdentity.objects.get().user == user


def test_operators_see_the_identities_but_only_superusers_link_them(operator_client, alice):
    assert operator_client.get(CHANGELIST).status_code == 200
    assert operator_client.get(reverse("admin:chipfarm_slackidentity_add")).status_code == 403
