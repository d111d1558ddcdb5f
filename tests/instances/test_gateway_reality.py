"""What the pool believes, against the fake Evolution behaving like 2.3.7 (field notes): lost webhooks, our own
closes, vanished instances, dead sockets, a release the gateway refuses, webhook drift, a `connecting` flood."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from chipfarm.client import SalvyClient
from chipfarm.models import ChipRelease
from chipfarm.provisioning import chip_release, releases_sweep
from chips.models import Chip, ChipAlert, ChipTransition
from chips.services import Actor, chip_transition
from instances.health import instances_check
from instances.maintenance import instance_restart, receipts_prune, webhooks_heal
from instances.models import ContactBinding, GatewayServer, Instance, WebhookReceipt
from instances.routing import contact_route
from instances.services import message_send
from tests.instances.conftest import payload

pytestmark = pytest.mark.django_db

A, B = "+5511988880001", "+5511988880002"


def post(client, body, settings, secret=None):
    import json

    return client.post("/webhooks/evolution", data=json.dumps(body), content_type="application/json",
                       headers={"X-Webhook-Secret": secret or settings.EVOLUTION_WEBHOOK_SECRET})


# --- bans and logouts that survive lost webhooks --------------------------------------------------------------

def test_a_ban_whose_webhooks_were_dropped_is_found_by_the_next_check(world, business_hours):
    chip = world.chip()
    contact_route(contact=A)
    contact_route(contact=B)
    world.fake.drop_webhooks(None)
    world.fake.close(chip.instance_name, 403)
    assert world.relay() == []  # every webhook of the ban was lost
    chip.refresh_from_db()
    assert chip.status == Chip.Status.ACTIVE and chip.is_connected
    fetches = world.fake.request_count("fetchInstances")

    result = instances_check()

    # One list call per gateway server finds the ban, not one per instance (field notes §2).
    assert world.fake.request_count("fetchInstances") - fetches == GatewayServer.objects.count() == 1
    chip.refresh_from_db()
    assert result.finals == 1
    assert chip.status == Chip.Status.BANNED and not chip.is_connected
    assert ChipTransition.objects.filter(chip=chip, transition="ban", actor_kind="task").count() == 1
    assert ChipAlert.objects.open().filter(chip=chip, kind="banned", severity="critical").count() == 1
    assert not ContactBinding.objects.current().filter(chip=chip).exists()
    # The next check changes nothing more: the close is applied once.
    assert instances_check().finals == 0
    assert ChipAlert.objects.get(chip=chip, kind="banned").occurrences == 1


def test_a_dropped_401_is_a_logout_not_a_ban(world):
    chip = world.chip()
    world.fake.drop_webhooks(None)
    world.fake.close(chip.instance_name, 401)

    instances_check()

    chip.refresh_from_db()
    instance = Instance.objects.get(chip=chip)
    assert chip.status == Chip.Status.ACTIVE and not chip.is_connected
    assert (instance.state, instance.last_disconnect_code) == ("close", 401)
    alert = ChipAlert.objects.open().get(chip=chip, kind="logged_out")
    assert alert.severity == "critical" and "link" in alert.message
    assert not ChipTransition.objects.filter(chip=chip, transition="ban").exists()


def test_the_webhook_and_the_check_apply_one_ban_once(world):
    chip = world.chip()
    world.fake.close(chip.instance_name, 403)
    world.relay()
    instances_check()
    assert ChipTransition.objects.filter(chip=chip, transition="ban").count() == 1
    assert ChipAlert.objects.get(chip=chip, kind="banned").occurrences == 1


# --- closes we caused are not alarms ---------------------------------------------------------------------------

def test_retiring_a_connected_chip_raises_no_logged_out_alert(world, fake_salvy):
    chip = world.chip()
    chip_transition(chip=chip.pk, transition="retire", actor=Actor.system("test"), reason="test")

    release = chip_release(chip_id=chip.pk)

    events = [d["event"] for d in world.fake.deliveries[-4:]]
    # Logout first, then delete (instance.delete is not among the events the pool subscribes to).
    assert events == ["status.instance", "logout.instance", "connection.update", "remove.instance"]
    assert world.relay()  # delivered to the app
    assert release.done and release.instance_deleted_at and release.line_canceled_at
    assert not ChipAlert.objects.filter(kind__in=["logged_out", "instance_gone"]).exists()
    instance = Instance.objects.get(chip=chip)
    assert (instance.state, instance.last_disconnect_code) == ("gone", 401)


# --- vanished instances ----------------------------------------------------------------------------------------

def test_an_instance_deleted_behind_the_pools_back_leaves_routing_after_the_next_check(world, business_hours):
    lost, kept = world.chip(priority=10), world.chip()
    assert contact_route(contact=A).chip_id == lost.pk
    world.fake.forget(lost.instance_name)  # the gateway lost it; no webhook

    instances_check()
    instances_check()

    lost.refresh_from_db()
    assert not lost.is_connected and Instance.objects.get(chip=lost).state == "gone"
    assert {contact_route(contact=c).chip_id for c in (A, B, "+5511988880003")} == {kept.pk}
    alert = ChipAlert.objects.get(chip=lost, kind="instance_gone")
    assert alert.severity == "critical" and alert.occurrences == 1 and "Link" in alert.action_taken


def test_a_remove_instance_webhook_from_outside_takes_the_chip_out_with_one_critical_alert(world, client, settings,
                                                                                         business_hours):
    lost, kept = world.chip(priority=10), world.chip()
    assert contact_route(contact=A).chip_id == lost.pk
    world.fake.forget(lost.instance_name)  # deleted outside the pool (another client, the manager UI)
    body = payload("remove_instance", instance=lost.instance_name)  # what 2.3.7 sends then: data null

    assert post(client, body, settings).status_code == 200
    assert post(client, body, settings).status_code == 200  # at-least-once: the same delivery again

    lost.refresh_from_db()
    assert Instance.objects.get(chip=lost).state == "gone" and not lost.is_connected  # by the webhook alone
    assert {contact_route(contact=c).chip_id for c in (A, B, "+5511988880003")} == {kept.pk}
    instances_check()  # the next check agrees (absent from the list) and raises nothing more
    alerts = ChipAlert.objects.filter(severity="critical")
    assert [(a.chip_id, a.kind, a.occurrences) for a in alerts] == [(lost.pk, "instance_gone", 1)]


def test_the_first_404_on_a_send_takes_the_chip_out_of_routing(world, business_hours):
    lost, kept = world.chip(priority=10), world.chip()
    world.fake.forget(lost.instance_name)

    first = message_send(contact=A, text="Olá", idempotency_key="k-404")

    assert first.message.chip_id == lost.pk and first.message.status == "failed"
    lost.refresh_from_db()
    assert not lost.is_connected
    assert contact_route(contact=B).chip_id == kept.pk
    assert contact_route(contact=A).chip_id == kept.pk  # moved off the lost chip
    assert ChipAlert.objects.filter(chip=lost, kind="instance_gone").count() == 1


# --- releases that always stop the cost ------------------------------------------------------------------------

def test_a_delete_answering_400_still_cancels_the_line_and_is_retried_later(world, fake_salvy,
                                                                           django_capture_on_commit_callbacks):
    chip = world.chip()
    with SalvyClient() as salvy:
        line = salvy.provision(area_code=11, name=chip.instance_name)
    Chip.objects.filter(pk=chip.pk).update(provider_line_id=line.id)
    world.fake.kill_socket(chip.instance_name)  # reports open; delete answers 400 (field notes §3)
    chip_transition(chip=chip.pk, transition="retire", actor=Actor.system("test"), reason="test")

    release = chip_release(chip_id=chip.pk)

    assert release.line_canceled_at is not None and (line.id, "unnecessary") in fake_salvy.canceled
    assert release.instance_deleted_at is None and release.instance_attempts == 1
    assert "400" in release.instance_error and release.pending == ["instance"]
    assert chip.instance_name in world.fake.instance_names()
    due = release.next_attempt_at
    assert timezone.now() + timedelta(seconds=50) < due < timezone.now() + timedelta(seconds=70)
    assert release.gave_up_at is None

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert releases_sweep() == []  # not due yet
    assert callbacks == []
    with time_machine.travel(due + timedelta(seconds=1)):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            assert releases_sweep() == [chip.pk]
        assert len(callbacks) == 1  # release_chip queued after commit
        release = chip_release(chip_id=chip.pk)  # what the queued task runs: restart first, then delete

    assert release.done and release.next_attempt_at is None
    assert chip.instance_name not in world.fake.instance_names()
    assert fake_salvy.canceled.count((line.id, "unnecessary")) == 1  # the line was cancelled once


def test_a_release_that_keeps_failing_ends_in_one_warning_naming_the_instance(world, settings):
    settings.RELEASE_MAX_ATTEMPTS = 2
    chip = world.chip()
    Chip.objects.filter(pk=chip.pk).update(provider_line_id=None)
    chip_transition(chip=chip.pk, transition="retire", actor=Actor.system("test"), reason="test")
    world.fake.fail_next(10, 503, route="delete")

    chip_release(chip_id=chip.pk)
    release = chip_release(chip_id=chip.pk)

    assert release.gave_up_at is not None and release.next_attempt_at is None
    alert = ChipAlert.objects.get(chip=chip, kind="release_failed")
    assert alert.severity == "warning" and chip.instance_name in alert.message


def test_the_chip_api_shows_what_a_retired_chip_has_not_released(world, api, fake_salvy):
    chip = world.chip()
    world.fake.kill_socket(chip.instance_name)
    chip_transition(chip=chip.pk, transition="retire", actor=Actor.system("test"), reason="test")
    chip_release(chip_id=chip.pk)

    body = api.get(f"/api/v1/chips/{chip.pk}").json()

    assert body["release"]["pending"] == ["instance"] and body["release"]["line_canceled_at"]
    assert "400" in body["release"]["last_error"]
    assert ChipRelease.objects.get(chip=chip).pending == ["instance"]


# --- dead sockets ----------------------------------------------------------------------------------------------

def test_a_send_failing_with_connection_closed_takes_the_chip_out_at_once_and_asks_for_a_restart(
        world, business_hours, django_capture_on_commit_callbacks):
    dead, healthy = world.chip(priority=10), world.chip()
    world.fake.kill_socket(dead.instance_name)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        outcome = message_send(contact=A, text="Olá", idempotency_key="k-dead")

    assert outcome.message.chip_id == dead.pk and outcome.message.status == "failed"
    assert "Connection Closed" in outcome.message.error
    dead.refresh_from_db()
    assert not dead.is_connected
    assert contact_route(contact=B).chip_id == healthy.pk  # the next route picks another chip
    assert world.fake.request_count("sendText", instance=dead.instance_name) == 1  # never retried
    assert len(callbacks) == 1  # the restart task, queued after commit
    assert instances_check().changes == []  # it still reports open: not believed before the restart settles

    assert instance_restart(instance_id=Instance.objects.get(chip=dead).pk) == "requested"
    world.relay()  # connecting, then open
    dead.refresh_from_db()
    assert dead.is_connected and Instance.objects.get(chip=dead).dead_socket_at is None


# --- connectionState wins; a `connecting` flood writes (almost) nothing ---------------------------------------

def _rows_written() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(n_tup_ins + n_tup_upd), 0) FROM pg_stat_xact_user_tables")
        return int(cursor.fetchone()[0])


def test_a_thousand_connecting_deliveries_write_a_handful_of_rows(world, client, settings):
    chip = world.chip()
    before = _rows_written()

    for i in range(1000):
        body = payload("connection_update_connecting", instance=chip.instance_name)
        body["date_time"] = f"2025-12-05T12:{i // 60 % 60:02d}:{i % 60:02d}.000Z"  # the body changes every time
        assert post(client, body, settings).status_code == 200

    assert _rows_written() - before <= 5
    assert not WebhookReceipt.objects.exists()
    assert Instance.objects.get(chip=chip).state == "connecting"


def test_the_checks_live_state_wins_over_a_late_connecting_webhook(world, client, settings):
    chip = world.chip()
    post(client, payload("connection_update_connecting", instance=chip.instance_name), settings)  # late, stale
    assert Instance.objects.get(chip=chip).state == "connecting"

    instances_check()

    assert Instance.objects.get(chip=chip).state == "open"
    chip.refresh_from_db()
    assert chip.is_connected


def test_a_session_connecting_for_minutes_is_reported_as_a_stuck_link(world, settings):
    chip = world.chip()
    world.fake.close(chip.instance_name, 401)
    world.relay()
    world.fake.whatsapp_reachable = False
    with world.fake._lock:  # the session retries: connect on a closed instance, WhatsApp out of reach
        world.fake._start_socket(world.fake._get(chip.instance_name))
    world.fake.connecting_flood(chip.instance_name, 3)
    world.relay()
    assert Instance.objects.get(chip=chip).state == "connecting"

    instances_check()
    assert Instance.objects.get(chip=chip).state == "close"  # connectionState says close (field notes §8)
    assert not ChipAlert.objects.filter(kind="stuck_link").exists()
    with time_machine.travel(timezone.now() + timedelta(minutes=settings.LINK_STUCK_MINUTES + 1)):
        instances_check()
    assert ChipAlert.objects.open().filter(chip=chip, kind="stuck_link").count() == 1


def test_applied_receipts_older_than_the_retention_are_pruned_pending_ones_never(settings):
    now = timezone.now()
    old = now - timedelta(days=settings.WEBHOOK_RECEIPT_RETENTION_DAYS + 1)
    WebhookReceipt.objects.create(dedup_key="old", event="messages.upsert", instance_name="x", received_at=old,
                                  applied_at=old)
    WebhookReceipt.objects.create(dedup_key="old-pending", event="messages.upsert", instance_name="x",
                                  received_at=old)
    WebhookReceipt.objects.create(dedup_key="new", event="messages.upsert", instance_name="x", received_at=now,
                                  applied_at=now)

    assert receipts_prune() == 1
    assert sorted(WebhookReceipt.objects.values_list("dedup_key", flat=True)) == ["new", "old-pending"]
    from config.celery import app

    assert app.conf.beat_schedule["prune-webhook-receipts"]["task"] == "instances.prune_receipts"


# --- webhook drift ---------------------------------------------------------------------------------------------

def test_one_drift_check_resets_every_instance_after_the_secret_changed(world, settings):
    chips = [world.chip() for _ in range(3)]
    assert webhooks_heal().healed == []
    settings.EVOLUTION_WEBHOOK_SECRET = "rotated-secret"

    result = webhooks_heal()

    assert sorted(result.healed) == sorted(c.instance_name for c in chips) and result.failed == {}
    assert webhooks_heal().healed == []
    world.fake.close(chips[0].instance_name, 515)  # a transient reconnect: connecting, open
    delivered = world.fake.deliveries[-2:]
    assert [d["headers"]["X-Webhook-Secret"] for d in delivered] == ["rotated-secret"] * 2
    assert world.relay()[-2:] == ["processed", "processed"]


# --- QR codes only while they live ----------------------------------------------------------------------------

def test_a_qr_is_shown_only_while_it_lives(world, admin_client):
    chip = world.chip(link=False)
    world.fake.qr(chip.instance_name)
    world.relay()
    instance = Instance.objects.get(chip=chip)
    assert instance.qr_is_live()
    page = admin_client.get(f"/admin/instances/instance/{instance.pk}/change/").content.decode()
    assert "<img" in page

    with time_machine.travel(timezone.now() + timedelta(seconds=46)):
        assert not Instance.objects.get(chip=chip).qr_is_live()
        page = admin_client.get(f"/admin/instances/instance/{instance.pk}/change/").content.decode()
    assert "<img" not in page and "expired" in page


def test_the_drift_check_runs_on_demand_from_the_admin(world, settings, admin_client):
    chips = [world.chip() for _ in range(2)]
    settings.EVOLUTION_WEBHOOK_SECRET = "rotated-from-admin"
    ids = [str(Instance.objects.get(chip=c).pk) for c in chips]

    response = admin_client.post("/admin/instances/instance/", {"action": "heal_webhooks", "_selected_action": ids},
                                 follow=True)

    assert response.status_code == 200 and "2 repaired" in response.content.decode()
    assert {world.fake.instance_info(c.instance_name)["webhook"]["headers"]["X-Webhook-Secret"] for c in chips} == {
        "rotated-from-admin"}
