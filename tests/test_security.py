"""Admin login throttling: 5 failures per (username, address) in 15 minutes lock that pair out."""

from __future__ import annotations

import uuid

import pytest
from django.contrib import admin
from django.core.cache import cache

from config import security
from config.security import ThrottledAdminAuthenticationForm

pytestmark = pytest.mark.django_db
LOGIN = "/admin/login/"
THROTTLED = "Too many failed login attempts for this account from your address"
WRONG = "Please enter the correct username and password"


@pytest.fixture(autouse=True)
def isolated_cache(settings):
    """Failure counters of this test's own on the real Redis (other runs use the same usernames)."""
    prefix = f"chipfarm-test-{uuid.uuid4().hex[:12]}"
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": prefix}}
    yield
    if "127.0.0.1:1/" in settings.CACHES["default"]["LOCATION"]:
        return
    client = cache._cache.get_client(write=True)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


@pytest.fixture
def staff(django_user_model):
    for name in ("alice", "bob"):
        django_user_model.objects.create_user(name, password=f"{name}-right-pw", is_staff=True)


def _login(client, username: str, password: str, address: str = "127.0.0.1"):
    return client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"},
                       REMOTE_ADDR=address)


def test_the_admin_uses_the_throttled_form():
    import config.urls  # noqa: F401 - sets it

    assert admin.site.login_form is ThrottledAdminAuthenticationForm


def test_the_right_password_is_refused_after_repeated_failures(client, staff):
    for attempt in range(1, 7):
        response = _login(client, "alice", "wrong")
        assert response.status_code == 200
        expected = WRONG if attempt <= security.MAX_FAILURES else THROTTLED
        assert expected in response.content.decode(), attempt

    response = _login(client, "alice", "alice-right-pw")

    assert response.status_code == 200
    assert THROTTLED in response.content.decode()
    assert "Try again in 15 minutes" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_other_users_and_other_addresses_are_not_affected(client, staff):
    for _ in range(6):
        _login(client, "alice", "wrong")

    assert _login(client, "bob", "bob-right-pw").status_code == 302
    client.logout()
    assert _login(client, "alice", "alice-right-pw", address="10.1.2.3").status_code == 302


def test_a_success_below_the_limit_clears_the_count(client, staff):
    for _ in range(security.MAX_FAILURES - 1):
        _login(client, "alice", "wrong")
    assert _login(client, "alice", "alice-right-pw").status_code == 302
    client.logout()

    for _ in range(security.MAX_FAILURES - 1):
        _login(client, "alice", "wrong")
    assert _login(client, "alice", "alice-right-pw").status_code == 302


def test_the_window_is_fifteen_minutes_from_the_first_failure(client, staff):
    _login(client, "ALICE ", "wrong")  # the same account however it is typed

    key = security._key("alice", type("R", (), {"META": {"REMOTE_ADDR": "127.0.0.1"}})())
    redis = cache._cache.get_client(write=True)
    assert 0 < redis.ttl(cache.make_and_validate_key(key)) <= security.WINDOW_SECONDS
    assert cache.get(key) == 1


def test_with_the_cache_down_logins_fail_open(client, staff, settings, caplog):
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"}}
    for _ in range(6):
        assert WRONG in _login(client, "alice", "wrong").content.decode()

    assert _login(client, "alice", "alice-right-pw").status_code == 302
    assert "cache unavailable" in caplog.text
