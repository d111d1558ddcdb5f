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
    assert page.locator("#pool-health").get_attribute("data-health") == "healthy"
    assert page.locator("#pool-health").inner_text().strip() == "Healthy"
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
    expect(page.locator("ul.messagelist li.success")).to_contain_text("Cool down: done.")
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
    assert page.locator("#pool-health").get_attribute("data-health") == "critical"
    with page.expect_navigation():
        page.click("#run-cycle")
    expect(page.locator("ul.messagelist li.success").first).to_contain_text("Cycle done:")
    messages = _success_messages(page)
    assert any(re.search(r"Cycle done: .*promoted to active 1\b.*health: Needs attention", m) for m in messages), (
        messages)
    counts = _counts(page)
    assert (counts["active"], counts["ready"], counts["warming"], counts["cooling"]) == (2, 2, 0, 1)
    assert page.locator("#pool-health").get_attribute("data-health") == "attention"
    assert Chip.objects.get(pk=pool["ready"][0].pk).status == S.ACTIVE  # the best trust went first
    shot("cycle")


# --- W2 6/7: the operator's walk in Portuguese, at 1440 px ----------------------------------------------------

def _problem_chip() -> Chip:
    """An active chip that lost its connection, with everything its page shows: usage, caps, trust breakdown,
    daily metrics, its session on a gateway server, messages and a binding."""
    from instances.models import ChipCapacity, ContactBinding, Instance, OutboundMessage
    from instances.services import instance_register
    from warmer.models import ChipDailyMetrics, TrustBreakdown

    chip = chip_in_state(status=S.ACTIVE, trust=88)
    instance_register(chip=chip)
    Instance.objects.filter(chip=chip).update(state="close", last_disconnect_code=428,
                                              last_disconnect_at=timezone.now())
    Chip.objects.filter(pk=chip.pk).update(is_connected=False, connection_changed_at=timezone.now())
    now = timezone.now()
    from instances.caps import day_window, hour_window

    ChipCapacity.objects.create(chip=chip, hour_window=hour_window(now), hour_count=7, day_window=day_window(now),
                                day_count=41)
    TrustBreakdown.objects.create(chip=chip, score=88, components={
        "age": 20.0, "progress": 20.0, "replies": 18.5, "delivery": 34.5, "disconnects": -5.0, "restrictions": 0.0})
    for days_ago in range(3):
        ChipDailyMetrics.objects.create(chip=chip, day=(now - timedelta(days=days_ago)).date(), sent=30 + days_ago,
                                        replies_sent=10, received=14, send_failures=1, new_peers=2)
    for n in range(3):
        OutboundMessage.objects.create(idempotency_key=f"browser-{n}", contact=f"+55119888877{n:02d}", chip=chip,
                                       text="Olá", status="delivered")
    ContactBinding.objects.create(contact="+5511988887700", chip=chip, expires_at=now + timedelta(days=30))
    from chips.services import alert_raise

    alert_raise(kind="disconnected", severity="warning", chip=chip,
                message=f"Chip {chip.phone} está desconectado há 47 minutos; a sessão não voltou depois de três "
                        "tentativas de reinício e o número continua fora da produção até alguém olhar.",
                action_taken="reinício pedido; contatos movidos para outros chips")
    alert_raise(kind="production_below_minimum", severity="critical",
                message="Produção abaixo do mínimo: 3 ativos para um mínimo de 5; nenhum chip pronto na reserva.")
    chip.refresh_from_db()
    return chip


def test_an_operator_retires_a_problem_chip_with_a_reason_in_portuguese(live_server, django_user_model,
                                                                       browser_page, artifacts):
    page = browser_page(locale="pt-BR", viewport=(1440, 900))
    django_user_model.objects.create_superuser(USERNAME, "browser-admin@example.com", PASSWORD)
    config = PoolConfiguration.defaults()
    config.production_min, config.ready_min, config.warmup_buffer, config.auto_provision = 1, 0, 0, False
    config.save()
    for _ in range(3):
        chip_in_state(status=S.ACTIVE, trust=90)
    chip = _problem_chip()
    shots = iter(range(1, 100))

    def shot(name: str) -> None:
        page.screenshot(path=str(artifacts / f"pt-{next(shots):02d}-{name}.png"), full_page=True)

    def fits_the_width() -> None:
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 1440, f"{page.url} is {width} px wide"
        # A changelist's table scrolls inside its own box when it is too wide: it must not need to.
        for box in page.locator("#changelist .results").all():
            inner, outer = box.evaluate("e => [e.scrollWidth, e.clientWidth]")
            assert inner <= outer, f"{page.url}: the list is {inner} px wide in {outer} px"

    page.goto(f"{live_server.url}/admin/login/")
    expect(page.locator("html")).to_have_attribute("lang", "pt-br")
    page.fill("#id_username", USERNAME)
    page.fill("#id_password", PASSWORD)
    page.click("#login-form [type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")

    # 1. The dashboard: the problem chip is in the attention list, under "disconnected".
    page.click("#dashboard-link")
    page.wait_for_url("**/admin/chipfarm/poolconfiguration/dashboard/")
    expect(page).to_have_title(re.compile("^Painel do pool"))
    group = page.locator("#needs-attention .attention-group[data-kind=disconnected]")
    expect(group).to_contain_text(chip.phone)
    expect(page.locator("#sending-state")).to_be_visible()
    fits_the_width()
    shot("dashboard-attention")

    # 2. The chip's page from there: usage against the caps, trust breakdown, metrics, its session.
    with page.expect_navigation():
        group.locator(f"a.attention-chip:has-text('{chip.phone}')").click()
    assert page.url.endswith(f"/admin/chips/chip/{chip.pk}/change/")
    expect(page.locator("#chip-usage .usage-1 .usage-figure")).to_have_text("7 / 20")
    expect(page.locator("#chip-usage .usage-2 .usage-figure")).to_have_text("41 / 100")
    expect(page.locator("#trust-breakdown tr[data-component=replies]")).to_contain_text("18,5")  # pt-BR decimals
    expect(page.locator("#trust-breakdown tr")).to_have_count(6)
    expect(page.locator("#daily-metrics tbody tr")).to_have_count(3)
    expect(page.locator("#chip-instance")).to_contain_text(chip.instance_name)
    expect(page.locator("#chip-instance")).to_contain_text("default")  # its gateway server
    expect(page.locator("#chip-bindings")).to_contain_text("1")
    expect(page.locator("#recent-messages tbody tr")).to_have_count(3)
    assert page.locator("input[name=_save]").count() == 0 and page.locator("a.deletelink").count() == 0
    fits_the_width()
    shot("chip-page")

    # 3. Retire, through the confirmation page: a blank reason is refused, a real one is kept.
    with page.expect_navigation():
        page.click("#transition-retire")
    assert page.url.endswith(f"/admin/chips/chip/{chip.pk}/transition/retire/")
    expect(page.locator("#transition-summary")).to_contain_text("Aposentado")
    shot("retire-confirm")
    page.fill("textarea[name=reason]", "   ")
    with page.expect_navigation():
        page.click("#confirm-transition")
    expect(page.locator(".errorlist")).to_be_visible()
    assert Chip.objects.get(pk=chip.pk).status == S.ACTIVE
    shot("retire-blank-refused")
    page.fill("textarea[name=reason]", "Número desconectado há horas; linha devolvida")
    with page.expect_navigation():
        page.click("#confirm-transition")
    assert page.url.endswith(f"/admin/chips/chip/{chip.pk}/change/")
    expect(page.locator("ul.messagelist li.success")).to_be_visible()

    # 4. The history shows the reason, with the transition's label and who did it.
    expect(page.locator("#last-transition")).to_contain_text("Número desconectado há horas; linha devolvida")
    history = page.locator("#transitions-group")
    expect(history).to_contain_text("Número desconectado há horas; linha devolvida")
    expect(history).to_contain_text(USERNAME)
    expect(page.locator(".chip-status-badge")).to_have_text("Aposentado")
    row = Chip.objects.get(pk=chip.pk).transitions.first()
    assert (row.transition, row.reason, row.actor_id) == (
        "retire", "Número desconectado há horas; linha devolvida", USERNAME)
    shot("chip-retired-history")

    # 5. The chip and alert lists fit 1440 px.
    for name, url in [("chips", "/admin/chips/chip/"), ("alerts", "/admin/chips/chipalert/")]:
        page.goto(f"{live_server.url}{url}")
        fits_the_width()
        shot(f"{name}-list")
