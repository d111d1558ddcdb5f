"""The chip page composed by the pool app (chipfarm.chip_page): what an operator asks about one chip, on São Paulo
time, in a fixed number of queries; plus the other lists' columns, search and CSV exports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from chipfarm.models import ChipRelease, OrchestratorOperation
from chips.models import Chip, Notification
from chips.services import Actor, alert_raise, chip_transition
from instances.caps import day_window, hour_window
from instances.models import ChipCapacity, ContactBinding, Instance, OutboundMessage
from instances.services import instance_register
from tests.factories import chip_in_state
from warmer.models import ChipDailyMetrics, TrustBreakdown

pytestmark = pytest.mark.django_db
S = Chip.Status


def change_url(chip: Chip) -> str:
    return reverse("admin:chips_chip_change", args=[chip.pk])


def test_a_time_on_the_chip_page_is_sao_paulo_wall_clock_time(client, admin_user):
    # 15:42 UTC is 12:42 in São Paulo (UTC−3, no daylight saving since 2019).
    moment = datetime(2027, 3, 10, 15, 42, tzinfo=UTC)
    with time_machine.travel(moment - timedelta(hours=1), tick=False):
        chip = chip_in_state(status=S.ACTIVE)
    with time_machine.travel(moment, tick=False):
        chip_transition(chip=chip.pk, transition="cool_down", actor=Actor.system("test"), reason="rest")
    with time_machine.travel(moment + timedelta(minutes=5), tick=False):
        client.force_login(admin_user)  # a session of that time
        page = client.get(change_url(chip)).content.decode()
    since = page.split('id="state-since">')[1].split("</time>")[0]
    assert since == "March 10, 2027, 12:42 p.m."
    assert "3:42 p.m." not in page.split('id="chip-overview"')[1].split("Times are São Paulo time.")[0]
    assert "Times are São Paulo time." in page


def test_the_chip_page_answers_what_an_operator_asks(admin_client, settings):
    settings.MAX_MSGS_PER_HOUR, settings.MAX_MSGS_PER_DAY = 20, 100
    now = timezone.now()
    chip = chip_in_state(status=S.ACTIVE, trust=88)
    instance_register(chip=chip)
    Instance.objects.filter(chip=chip).update(state="close", last_disconnect_code=428, last_disconnect_at=now)
    ChipCapacity.objects.create(chip=chip, hour_window=hour_window(now), hour_count=7, day_window=day_window(now),
                                day_count=41, max_per_hour=25)
    TrustBreakdown.objects.create(chip=chip, score=88, components={"age": 20.0, "replies": 12.5,
                                                                   "disconnects": -5.0})
    ChipDailyMetrics.objects.create(chip=chip, day=day_window(now), sent=31, replies_sent=9, received=12)
    for n in range(10):
        OutboundMessage.objects.create(idempotency_key=f"k{n}", contact=f"+55119888877{n:02d}", chip=chip, text="x")
    ContactBinding.objects.create(contact="+5511988887700", chip=chip, expires_at=now + timedelta(days=30))
    ContactBinding.objects.create(contact="+5511988887701", chip=chip, expires_at=now + timedelta(days=30),
                                  released_at=now)
    alert_raise(kind="disconnected", severity="warning", message="offline for 40 min", chip=chip)
    chip_transition(chip=chip.pk, transition="cool_down", actor=Actor.user(type("U", (), {
        "get_username": lambda self: "ana"})()), reason="too many failures")

    page = admin_client.get(change_url(chip)).content.decode()

    state = page.split('id="chip-state"')[1].split("</section>")[0]
    assert "Active → Cooling" in state and "Cool down" in state and "too many failures" in state and "ana" in state
    assert "offline for 40 min" in state
    usage = page.split('id="chip-usage"')[1].split("</section>")[0]
    assert '<td class="usage-figure">7 / 25</td>' in usage  # the operator's override is the cap in effect
    assert '<td class="usage-figure">41 / 100</td>' in usage
    trust = page.split('id="chip-trust"')[1].split("</section>")[0]
    assert 'data-component="replies"' in trust and "12.5" in trust and "/ 25" in trust and "-5.0" in trust
    warming = page.split('id="chip-warming"')[1].split("</section>")[0]
    assert "<td>31</td>" in warming
    connection_ = page.split('id="chip-connection"')[1].split("</section>")[0]
    assert chip.instance_name in connection_ and "default" in connection_ and "428" in connection_
    traffic = page.split('id="chip-traffic"')[1].split("</section>")[0]
    assert "1 current contact binding" in traffic  # the released one does not count
    assert traffic.count("+55119888877") == 8  # the 8 most recent messages
    assert 'id="chip-release"' not in page  # only for retired chips


def test_a_retired_chips_page_shows_its_release(admin_client):
    chip = chip_in_state(status=S.RETIRED)
    ChipRelease.objects.create(chip=chip, reason="retired", line_canceled_at=timezone.now(),
                               instance_error="gateway answered 400", next_attempt_at=timezone.now())
    release = admin_client.get(change_url(chip)).content.decode().split('id="chip-release"')[1].split("</section>")[0]
    assert "Under way: the WhatsApp session still to release." in release and "gateway answered 400" in release


def test_the_chip_page_shows_a_live_qr_to_link(admin_client):
    chip = chip_in_state(status=S.PENDING)
    instance_register(chip=chip)
    Instance.objects.filter(chip=chip).update(state="connecting", qr_code="2@abc,def", qr_updated_at=timezone.now())
    page = admin_client.get(change_url(chip)).content.decode()
    assert 'id="chip-qr"' in page and "data:image/png;base64," in page


def test_the_chip_page_query_count_does_not_grow_with_history(admin_client):
    chip = chip_in_state(status=S.ACTIVE)

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert admin_client.get(change_url(chip)).status_code == 200
        return len(ctx.captured_queries)

    few = queries()
    for n in range(20):
        OutboundMessage.objects.create(idempotency_key=f"q{n}", contact=f"+55119888877{n:02d}", chip=chip, text="x")
        alert_raise(kind=f"k{n}", severity="warning", message="m", chip=chip)
    for _ in range(5):
        chip_transition(chip=chip.pk, transition="cool_down", actor=Actor.system("t"))
        Chip.objects.filter(pk=chip.pk).update(cooling_until=None)
        chip_transition(chip=chip.pk, transition="resume", actor=Actor.system("t"))
    assert queries() == few


def test_the_chip_list_shows_usage_today_in_one_query(admin_client):
    now = timezone.now()
    chip = chip_in_state(status=S.ACTIVE)
    ChipCapacity.objects.create(chip=chip, day_window=day_window(now), day_count=12)
    page = admin_client.get(reverse("admin:chips_chip_changelist")).content.decode()
    assert "12 / 100" in page


def test_alert_list_columns_and_phone_search(admin_client):
    chip = chip_in_state(status=S.ACTIVE)
    other = chip_in_state(status=S.ACTIVE)
    alert_raise(kind="disconnected", severity="critical", message="offline", chip=chip, action_taken="moved away")
    alert_raise(kind="disconnected", severity="warning", message="other offline", chip=other)
    url = reverse("admin:chips_chipalert_changelist")
    page = admin_client.get(url).content.decode()
    for header in ["Last raised at", "Severity", "Chip", "Message", "State"]:
        assert header in page
    assert "→ moved away" in page
    digits = chip.phone[1:]
    found = admin_client.get(url, {"q": f"+{digits[:2]} {digits[2:4]} {digits[4:8]}-{digits[8:]}"}).content.decode()
    assert "offline" in found and "other offline" not in found


def test_the_notifications_page_says_what_became_of_each_slack_message(viewer_client):
    Notification.objects.create(channel="alerts", text="sent one", status="sent", sent_at=timezone.now())
    Notification.objects.create(channel="alerts", text="failed one", status="failed", attempts=8, last_error="404")
    Notification.objects.create(channel="operations", text="retrying one", status="pending", attempts=2)
    url = reverse("admin:chips_notification_changelist")
    page = viewer_client.get(url).content.decode()
    assert "sent one" in page and "failed one" in page and "retrying one" in page
    assert ">Sent<" in page and ">Failed<" in page and ">Retrying<" in page
    retrying = viewer_client.get(url, {"delivery": "retrying"}).content.decode()
    assert "retrying one" in retrying and "failed one" not in retrying
    row = Notification.objects.get(text="sent one")
    detail = viewer_client.get(reverse("admin:chips_notification_change", args=[row.pk])).content.decode()
    assert 'name="_save"' not in detail and "deletelink" not in detail


@pytest.mark.parametrize(("model", "header"), [
    ("chipfarm_orchestratoroperation", "created at,operation,by,chip,target chip,reason,success,error"),
    ("chips_chipalert", "last raised at,severity,kind,chip,message,action taken,occurrences,acknowledged at"),
    ("instances_outboundmessage", "created at,idempotency key,contact,chip,status,gateway message id,error"),
])
def test_operations_alerts_and_messages_export_to_csv(viewer_client, model, header):
    chip = chip_in_state(status=S.ACTIVE)
    OrchestratorOperation.objects.create(kind="auto_replace", chip=chip, reason="=HYPERLINK(\"x\")")
    alert_raise(kind="banned", severity="critical", message="chip banned", chip=chip)
    OutboundMessage.objects.create(idempotency_key="csv-1", contact="+5511988887777", chip=chip, text="secret text")
    url = reverse(f"admin:{model}_changelist")
    model_admin_pk = {"chipfarm_orchestratoroperation": OrchestratorOperation, "chips_chipalert": None,
                      "instances_outboundmessage": OutboundMessage}
    from chips.models import ChipAlert

    pks = list((model_admin_pk[model] or ChipAlert).objects.values_list("pk", flat=True))
    response = viewer_client.post(url, {"action": "export_csv", "_selected_action": pks})
    assert response.status_code == 200 and response.streaming
    body = b"".join(response.streaming_content).decode("utf-8-sig")
    assert body.splitlines()[0].startswith(header)
    assert chip.phone in body
    assert "secret text" not in body  # messages' texts stay out of exports
    if model == "chipfarm_orchestratoroperation":
        assert "'=HYPERLINK" in body  # a formula is neutralised
