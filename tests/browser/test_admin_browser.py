"""The operators' admin in a real browser: log in, read the pool dashboard, run a transition from a
chip's page, a bulk action from the list, and a cycle from the dashboard.

The cycle comes last on purpose: it promotes every warming chip that qualifies, which would leave
nothing for the bulk "Promote to ready" to do.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from chipfarm.models import PoolConfiguration
from chips.demo import chip_in_state
from chips.models import Chip, WarmingPhase

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

S = Chip.Status
USERNAME, PASSWORD = "browser-admin", "a-long-browser-password"


def _pool() -> dict[str, list[Chip]]:
    """2 active (trust 90), 1 ready (trust 95), 2 warming chips that satisfy promote_to_ready (trust 92)."""
    config = PoolConfiguration.defaults()
    # Healthy as created (active 2 >= 2, ready 1 >= 1, warming 2 >= 4/2), and no purchase from the cycle.
    config.production_min, config.production_max, config.ready_min, config.warmup_buffer = 2, 10, 1, 2
    config.auto_provision = False
    config.full_clean()
    config.save()
    active = [chip_in_state(status=S.ACTIVE, trust=90) for _ in range(2)]
    ready = [chip_in_state(status=S.READY, trust=95)]
    warming = []
    for _ in range(2):
        chip = chip_in_state(status=S.WARMING)
        chip.set_trust(92)
        chip.warming_phase = WarmingPhase.OPERATION
        chip.warming_started_at = timezone.now() - timedelta(days=25)
        chip.save()
        warming.append(chip)
    return {"active": active, "ready": ready, "warming": warming}


def _counts(page) -> dict[str, int]:
    rows = page.locator("#pool-counts tbody tr")
    return {rows.nth(i).get_attribute("data-state"): int(rows.nth(i).locator(".count").inner_text())
            for i in range(rows.count())}


def _success_messages(page) -> list[str]:
    return page.locator("ul.messagelist li.success").all_inner_texts()


def test_operator_runs_the_pool_from_the_admin(live_server, django_user_model, browser_page, artifacts):
    page = browser_page()  # first: no Chromium fails the test here, pointing at scripts/install_browser.sh
    django_user_model.objects.create_superuser(USERNAME, "browser-admin@example.com", PASSWORD)
    pool = _pool()
    cooled = pool["active"][0]
    shots = iter(range(1, 100))

    def shot(name: str) -> None:
        page.screenshot(path=str(artifacts / f"{next(shots):02d}-{name}.png"), full_page=True)

    # 1. Log in.
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", USERNAME)
    page.fill("#id_password", PASSWORD)
    shot("login")
    page.click("#login-form [type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    assert page.locator("#dashboard-link").is_visible()
    shot("admin-index")

    # 2. The pool dashboard, from the index link: health and counts.
    page.click("#dashboard-link")
    page.wait_for_url("**/admin/chipfarm/poolconfiguration/dashboard/")
    assert page.locator("#pool-health").inner_text().strip() == "HEALTHY"
    counts = _counts(page)
    assert page.locator("#pool-counts tr[data-state=active] .count").inner_text() == "2"
    assert (counts["active"], counts["ready"], counts["warming"], counts["cooling"]) == (2, 1, 2, 0)
    assert page.locator("#pool-chart").is_visible()
    shot("dashboard")

    # 3. An active chip's page: the "Cool down" transition button.
    page.goto(f"{live_server.url}/admin/chips/chip/{cooled.pk}/change/")
    button = page.locator("button[name=_fsm_transition_to][value=cool_down]")
    assert button.inner_text().strip() == "Cool down"
    with page.expect_navigation():
        button.click()
    expect(page.locator("ul.messagelist li.success")).to_contain_text("cool_down done.", ignore_case=True)
    expect(page.locator(".field-status .readonly")).to_have_text("Cooling")
    cooled.refresh_from_db()
    assert cooled.status == S.COOLING and cooled.cooling_until is not None
    shot("chip-cooled")

    # 4. The chips list: bulk "Promote to ready" on the two warming chips.
    page.goto(f"{live_server.url}/admin/chips/chip/")
    for chip in pool["warming"]:
        page.check(f"input.action-select[value='{chip.pk}']")
    page.select_option("select[name=action]", label="Promote to ready")
    with page.expect_navigation():
        page.click(".actions button[name=index]")
    expect(page.locator("ul.messagelist li.success").first).to_contain_text("2 chips:")
    messages = _success_messages(page)
    assert any(m.startswith("2 chips:") and "Promote to ready" in m for m in messages), messages
    assert set(Chip.objects.filter(pk__in=[c.pk for c in pool["warming"]]).values_list("status", flat=True)) == {
        S.READY}
    shot("bulk-promoted")

    # 5. Back to the dashboard: the new counts, then a cycle brings production back to its minimum.
    page.goto(f"{live_server.url}/admin/")
    page.click("#dashboard-link")
    page.wait_for_url("**/admin/chipfarm/poolconfiguration/dashboard/")
    counts = _counts(page)
    assert (counts["active"], counts["ready"], counts["warming"], counts["cooling"]) == (1, 3, 0, 1)
    assert page.locator("#pool-health").inner_text().strip() == "CRITICAL"
    with page.expect_navigation():
        page.click("#run-cycle")
    expect(page.locator("ul.messagelist li.success").first).to_contain_text("Cycle done:")
    messages = _success_messages(page)
    assert any(re.search(r"Cycle done: .*promote_active 1\b.*health attention", m) for m in messages), messages
    counts = _counts(page)
    assert (counts["active"], counts["ready"], counts["warming"], counts["cooling"]) == (2, 2, 0, 1)
    assert page.locator("#pool-health").inner_text().strip() == "ATTENTION"
    assert Chip.objects.get(pk=pool["ready"][0].pk).status == S.ACTIVE  # the best trust went first
    shot("cycle")
