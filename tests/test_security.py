"""Admin login throttling by django-axes: 5 failures per (username, address) lock that pair for 15 minutes.

The lockout is a row in PostgreSQL (axes' database handler), listed in the admin and cleared there.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from django.utils import timezone

pytestmark = pytest.mark.django_db
LOGIN = "/admin/login/"
LOCKED = "Too many failed login attempts for this account from your address"
WRONG = "Please enter the correct username and password"
ATTEMPTS = reverse("admin:axes_accessattempt_changelist")


@pytest.fixture
def staff(django_user_model):
    for name in ("alice", "bob"):
        django_user_model.objects.create_user(name, password=f"{name}-right-pw", is_staff=True)


def _login(client, username: str, password: str, address: str = "127.0.0.1"):
    return client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"},
                       REMOTE_ADDR=address)


def _lock_alice(client) -> None:
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _login(client, "alice", "wrong")


def _staff_client(django_user_model, name: str, group: str) -> Client:
    user = django_user_model.objects.create_user(name, password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    other = Client()
    other.force_login(user)
    return other


def test_axes_guards_every_login():
    assert settings.AUTHENTICATION_BACKENDS[0] == "axes.backends.AxesStandaloneBackend"
    assert settings.MIDDLEWARE[-1] == "axes.middleware.AxesMiddleware"
    assert "axes" in settings.INSTALLED_APPS
    assert (5, timedelta(minutes=15)) == (settings.AXES_FAILURE_LIMIT, settings.AXES_COOLOFF_TIME)
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]


def test_five_wrong_passwords_lock_the_pair_and_then_even_the_right_one_is_refused(client, staff):
    for attempt in range(1, 5):
        response = _login(client, "alice", "wrong")
        assert response.status_code == 200, attempt
        assert WRONG in response.content.decode(), attempt

    fifth = _login(client, "alice", "wrong")
    assert fifth.status_code == 429 and LOCKED in fifth.content.decode()

    response = _login(client, "alice", "alice-right-pw")

    page = response.content.decode()
    assert response.status_code == 429
    assert LOCKED in page and "Try again in 15 minutes" in page
    # A normal page: the admin's login frame, a way back, no form to keep guessing in.
    assert "<html" in page and "Back to the login page" in page and 'id="login-form"' not in page
    assert "_auth_user_id" not in client.session
    attempt = AccessAttempt.objects.get()
    assert (attempt.username, attempt.ip_address, attempt.failures_since_start) == ("alice", "127.0.0.1", 5)


def test_another_username_and_another_address_are_not_locked(client, staff):
    _lock_alice(client)

    assert _login(client, "bob", "bob-right-pw").status_code == 302
    client.logout()
    assert _login(client, "alice", "alice-right-pw", address="10.1.2.3").status_code == 302


def test_a_success_below_the_limit_clears_the_count(client, staff):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, "alice", "wrong")
    assert _login(client, "alice", "alice-right-pw").status_code == 302
    assert not AccessAttempt.objects.exists()
    client.logout()

    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, "alice", "wrong")
    assert _login(client, "alice", "alice-right-pw").status_code == 302


def test_the_lock_ends_fifteen_minutes_after_it_was_set_however_often_one_keeps_trying(client, staff):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        _lock_alice(client)
    with time_machine.travel(start + timedelta(minutes=10), tick=False):
        assert _login(client, "alice", "wrong").status_code == 429  # refused, not counted: no new window
    with time_machine.travel(start + timedelta(minutes=14), tick=False):
        assert _login(client, "alice", "alice-right-pw").status_code == 429
    with time_machine.travel(start + timedelta(minutes=15, seconds=1), tick=False):
        assert _login(client, "alice", "alice-right-pw").status_code == 302


def test_the_lockout_is_listed_in_the_admin_and_an_operator_clears_it_there(client, staff, django_user_model):
    _lock_alice(client)
    operator = _staff_client(django_user_model, "oper", "Operators")

    page = operator.get(ATTEMPTS).content.decode()
    assert "alice" in page and "127.0.0.1" in page and "Locked Out" in page
    assert "alice" in operator.get(ATTEMPTS, {"locked_out": "yes"}).content.decode()

    attempt = AccessAttempt.objects.get(username="alice")
    assert 'value="delete_selected"' not in page  # no deleting from the admin for operators: they unlock
    response = operator.post(ATTEMPTS, {"action": "unlock", "_selected_action": [attempt.pk]})
    assert response.status_code == 302
    assert not AccessAttempt.objects.exists()

    assert _login(client, "alice", "alice-right-pw").status_code == 302


def test_superusers_see_the_lockouts_and_viewers_do_not(client, staff, admin_client, django_user_model):
    _lock_alice(client)
    assert "alice" in admin_client.get(ATTEMPTS).content.decode()

    viewer = _staff_client(django_user_model, "look", "Viewers")
    assert viewer.get(ATTEMPTS).status_code == 403


def test_the_attempts_changelist_does_not_grow_in_queries(client, staff, admin_client, django_assert_max_num_queries):
    for n in range(30):
        _login(client, f"guess-{n}", "wrong", address=f"10.0.0.{n}")
    with django_assert_max_num_queries(12):
        assert admin_client.get(ATTEMPTS).status_code == 200
