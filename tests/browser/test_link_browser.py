"""Linking a number the company owns, in a real browser: the admin's link page shows a live QR that changes when
the gateway rotates it, and flips to "linked" when the phone scans it (W2 3/7). Screenshots in
test-artifacts/browser/."""

from __future__ import annotations

import re
import threading

import pytest
from playwright.sync_api import expect

from chips.models import Chip

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
USERNAME, PASSWORD = "link-admin", "a-long-browser-password"


def off_the_loop(action, *args):
    """Run a fake's control in another thread: Playwright keeps an event loop running in this one, and the fake
    delivers its webhooks with a blocking client of its own."""
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", action(*args)))
    thread.start()
    thread.join(timeout=30)
    return result.get("value")


def test_the_link_page_shows_a_live_qr_and_flips_to_linked(live_server, django_user_model, browser_page, artifacts,
                                                           fake_evolution, settings):
    page = browser_page()
    settings.EVOLUTION_WEBHOOK_URL = f"{live_server.url}/webhooks/evolution"  # the fake's events reach the app
    settings.PUBLIC_BASE_URL = live_server.url
    fake_evolution.auto_qr = True
    django_user_model.objects.create_superuser(USERNAME, "link@example.com", PASSWORD)

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", USERNAME)
    page.fill("#id_password", PASSWORD)
    page.click("#login-form [type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")

    page.goto(f"{live_server.url}/admin/chips/chip/")
    page.click("#add-own-number")
    page.fill("#id_phone", "+55 61 98765-4321")
    page.screenshot(path=str(artifacts / "link-01-add-own-number.png"), full_page=True)
    with page.expect_navigation():
        page.click("#add-own-form [type=submit]")
    chip = Chip.objects.get(phone="+5561987654321")
    assert chip.status == Chip.Status.PENDING

    with page.expect_navigation():
        page.click("#link-chip")
    qr = page.locator("#qr")
    expect(qr).to_have_attribute("data-code", re.compile(r"^2@"))
    first = qr.get_attribute("data-code")
    expect(page.locator("#pairing-code")).to_have_text(re.compile(r"^[A-Z0-9]{8}$"))
    page.screenshot(path=str(artifacts / "link-02-live-qr.png"), full_page=True)

    off_the_loop(fake_evolution.qr, chip.instance_name)  # the gateway rotates the code (qrcode.updated)
    expect(qr).not_to_have_attribute("data-code", first, timeout=10_000)
    second = qr.get_attribute("data-code")
    page.screenshot(path=str(artifacts / "link-03-rotated-qr.png"), full_page=True)

    off_the_loop(fake_evolution.scan, chip.instance_name, second, "5561987654321")  # the phone scans it
    expect(page.locator("#link-state")).to_have_attribute("data-state", "linked", timeout=10_000)
    page.screenshot(path=str(artifacts / "link-04-linked.png"), full_page=True)
    chip.refresh_from_db()
    assert chip.status == Chip.Status.WARMING and chip.is_connected
